"""eval, the quality report of a result (identity, expression, stability, seams, colour, sharpness),
and inspect, which reads back the mark saying a file is synthetic."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.cli.argtypes import int_in
from facelab.cli.common import workspace_from
from facelab.errors import UsageError
from facelab.progress import say


def register(sub, common) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="measure a result: identity, expression, temporal stability, seams, colour, sharpness",
        description="Scores every frame of a result against the dst frame it was made from and writes "
        "report/index.html (with pictures of the worst frames) and report/report.json. Without "
        "arguments: the workspace's result.mp4 against its dst video, faces and src faceset.",
    )
    p.add_argument("--result", type=Path, help="the result video (default: the workspace's result.mp4)")
    p.add_argument("--compare", type=Path, nargs="+", metavar="VIDEO",
                   help="several results of the same dst, side by side in one report")  # fmt: skip
    p.add_argument("--dst", type=Path, help="the dst video (default: the workspace's; faces then detected)")
    p.add_argument("--src", type=Path, nargs="+", metavar="FILE",
                   help="videos or photos of the src person (default: the src faceset)")  # fmt: skip
    p.add_argument("--json", type=Path, dest="json_path", metavar="FILE", help="default: report/report.json")
    p.add_argument("--html", type=Path, dest="html_dir", metavar="DIR", help="default: <workspace>/report/")
    p.add_argument("--every", type=int_in(1, 1_000_000), default=1, metavar="N",
                   help="score every N-th frame (default 1)")  # fmt: skip
    p.set_defaults(handler=cmd_eval)
    p = sub.add_parser("inspect", parents=[common], help="read the synthetic-media mark of a video or image",
                       description="Prints the mark facelab writes into every result (tool, version, "
                       "model, kind, iteration, date); exit 1 when the file has none.")  # fmt: skip
    p.add_argument("file", type=Path)
    p.set_defaults(handler=cmd_inspect)


def cmd_eval(args: argparse.Namespace) -> int:
    from facelab.eval.report import summary_lines
    from facelab.eval.workspace import EvalOptions, run_eval

    if args.result and args.compare:
        raise UsageError("give --result FILE or --compare A B ..., not both")
    results = list(args.compare or ([args.result] if args.result else []))
    opts = EvalOptions(results=results, dst=args.dst, src=list(args.src or []), every=args.every,
                       json_path=args.json_path, html_dir=args.html_dir)  # fmt: skip
    evs, page = run_eval(workspace_from(args), opts)
    for ev in evs:
        say(f"{ev.result}: {len(ev.frames)} frames scored")
        for line in summary_lines(ev):
            say(f"  {line}")
    say(f"report: {page}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from facelab.errors import FacelabError
    from facelab.media.mark import read_mark

    if not args.file.is_file():
        raise FacelabError(f"{args.file} does not exist: give a video or image file")
    mark = read_mark(args.file)
    if mark is None:
        say(f"{args.file}: no facelab mark")
        return 1
    say(f"{args.file}: synthetic, made with facelab")
    say(json.dumps(mark, indent=1, sort_keys=True))
    return 0
