"""run: the whole workflow in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.cli.argtypes import int_in, positive_float
from facelab.cli.common import workspace_from
from facelab.progress import say
from facelab.train.recipes import RECIPES


def register(sub, common) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="all seven steps with defaults: two videos in, result.mp4 out (rerun to resume)",
        description="Extract frames and faces from both videos, train, merge and encode result.mp4 (with the "
        "dst sound) and result_mask.mp4. A rerun after an interruption continues where it stopped.",
    )
    p.add_argument("--src", type=Path, required=True, help="video of the face to put in")
    p.add_argument("--dst", type=Path, required=True, help="video to put the face into")
    p.add_argument("--model", default="quick96", choices=["auto", *sorted(k for k in RECIPES if k != "xseg")],
                   help="model kind (default: quick96); auto: the largest resolution up to the dst faces' "
                   "size that gets enough training in the --minutes budget here, by timing each")  # fmt: skip
    p.add_argument("--name", default="run", help="model name (default: run)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int_in(1, 10**9), help="training iterations")
    budget.add_argument("--minutes", type=positive_float, help="training time (default: 30 minutes)")
    p.add_argument("--batch", type=int_in(1, 4096), help="training batch size (default: the model's)")
    p.add_argument("--src-reference", type=Path, metavar="PHOTO", help="keep only this person's src faces")
    p.add_argument("--dst-reference", type=Path, metavar="PHOTO", help="keep only this person's dst faces")
    p.add_argument(
        "--overwrite", action="store_true", help="replace frames/faces the workspace already holds"
    )
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from facelab.run import RunOptions, run, summary
    from facelab.train.catalog import check_name

    opts = RunOptions(
        src=args.src, dst=args.dst, model=args.model, name=check_name(args.name),
        iterations=args.iterations or 0, minutes=args.minutes or 0.0, batch=args.batch,
        src_reference=args.src_reference, dst_reference=args.dst_reference, overwrite=args.overwrite,
    )  # fmt: skip
    results = run(workspace_from(args), opts)
    say(summary(results))
    return 0
