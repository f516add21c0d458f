"""The `facelab` command: a thin layer of argument parsing over the pipeline modules.

Each stage module here adds its sub-commands with `register(subparsers, common)`; they are
registered in workflow order so `facelab --help` reads like the DeepFaceLab .bat list.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path

from facelab import __version__, progress, prompts
from facelab.cli.common import common_options
from facelab.errors import FacelabError, UsageError

EPILOG = """\
workflow (one workspace folder, as in DeepFaceLab):
  1. facelab extract-frames src      source video -> data_src/00001.jpg ...
  2. facelab extract-frames dst      destination video -> data_dst/ (every frame)
  3. facelab extract-faces src       aligned source faces -> data_src/aligned/
     facelab sort / filter / faceset clean the faceset (rejects go to aligned_trash/)
  4. facelab extract-faces dst       aligned dst faces + debug images -> data_dst/aligned_debug/
     facelab xseg train|apply         occlusion masks from polygons labelled in `facelab ui`
  5. facelab train --model quick96   train model/<name>_Quick96/ (rerun to resume)
     facelab models list|rename|delete|restore
     facelab import-dfl DIR             bring a DeepFaceLab model across (export-dfl goes back)
  6. facelab merge                   the model's faces into every dst frame -> data_dst/merged/
  7. facelab make-video              data_dst/merged/ -> result.mp4 (+ result_mask.mp4)
     facelab eval                    how good result.mp4 is, measured -> report/index.html
     facelab inspect FILE            the mark that says a video or image is a facelab swap
     facelab export / live           a .dfm for DeepFaceLive; swap a camera, stream or file live
  all in one: facelab run --src A.mp4 --dst B.mp4 [--minutes 30]
  every command takes --workspace DIR (default ./workspace or $FACELAB_WORKSPACE), before or after it
"""


class Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# Who registers each sub-command, in workflow order (`facelab --help` reads like DeepFaceLab's .bat
# list): (module in facelab.cli, its register function, the commands it adds). A command line that
# names its command builds only that part of the parser, so `extract-frames`, `make-video`, `sort`
# and the rest start without importing the model modules (torch: about 1 s of a 2 s start).
REGISTRARS = [
    ("misc", "register_setup", ("info", "workspace")),
    ("video", "register_extract", ("extract-frames",)),
    ("faces", "register", ("extract-faces",)),
    ("faces", "register_faceset_tools", ("sort", "filter", "faceset")),
    ("xseg", "register", ("xseg",)),
    ("train", "register_train", ("train",)),
    ("train", "register_models", ("models",)),
    ("dfl", "register", ("import-dfl", "export-dfl")),
    ("merge", "register", ("merge",)),
    ("video", "register_make_video", ("make-video",)),
    ("evaluation", "register", ("eval", "inspect")),
    ("live", "register_export", ("export",)),
    ("live", "register_live", ("live",)),
    ("run", "register", ("run",)),
    ("ui", "register", ("ui",)),
    ("misc", "register_demo", ("demo",)),
]


def command_in(argv: list[str]) -> str | None:
    """The sub-command an argument list names (after the options that may come before it)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--workspace", "-w"):
            i += 2
            continue
        if not arg.startswith("-"):
            return arg
        i += 1
    return None


def build_parser(command: str | None = None) -> Parser:
    """The command-line parser: every command's, or (`command`) only the part that command needs."""
    import importlib

    parser = Parser(
        prog="facelab",
        description="Face swapping for video: the DeepFaceLab workflow on PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"facelab {__version__}")
    parser.add_argument(  # also before the command, as git's -C: `facelab -w W extract-frames dst`
        "--workspace", "-w", dest="workspace_first", type=Path, metavar="DIR",
        help="workspace folder for the command (the same as its own --workspace)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands, in workflow order")
    common = common_options()
    known = any(command in names for _, _, names in REGISTRARS)
    for module, register, names in REGISTRARS:
        if not known or command in names:
            getattr(importlib.import_module(f"facelab.cli.{module}"), register)(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command_in(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if args.workspace_first is not None:
        if args.workspace is not None and args.workspace != args.workspace_first:
            parser.error(f"two workspaces: {args.workspace_first} before the command, {args.workspace} after")
        args.workspace = args.workspace_first
    progress.set_quiet(args.quiet)
    if args.debug:
        os.environ["FACELAB_DEBUG"] = "1"  # worker processes print their tracebacks too
    prompts.set_assume_yes(args.yes)
    code = _run(args)
    progress.event("end", code=code)
    return code


_DISK = {
    errno.EROFS: "the file system is read-only: make the workspace writable (or choose another)",
    errno.EIO: "the disk reported an input/output error (failing, removed, or turned read-only): check it, "
    "then run the same command again",
    errno.EACCES: "permission denied: make the workspace writable for this user",
    errno.ENOSPC: "the disk is full: free some space, then run the same command again to continue",
    errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again",
    errno.EFBIG: "the file is over the size this system allows (ulimit -f): raise the limit, then run again",
    errno.EEXIST: "a file is in the way where a folder is needed: move it away",
    errno.ENOTDIR: "a file is in the way where a folder is needed: move it away",
}


def _disk_problem(exc: OSError) -> str | None:
    """One line for the file-system errors a user can fix (read-only, full, a file in the way)."""
    if exc.errno not in _DISK:
        return None
    where = exc.filename or "the workspace"
    return f"{where}: {_DISK[exc.errno]}"


def _run(args: argparse.Namespace) -> int:
    try:
        return args.handler(args) or 0
    except FacelabError as exc:
        if args.debug:
            traceback.print_exc()
        prefix = "usage error" if isinstance(exc, UsageError) else "error"
        print(f"facelab {args.command}: {prefix}: {exc}", file=sys.stderr)
        progress.event("error", message=str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"facelab {args.command}: interrupted", file=sys.stderr)
        progress.event("error", message="interrupted")
        return 130
    except Exception as exc:
        problem = _disk_problem(exc) if isinstance(exc, OSError) else None
        if args.debug:
            traceback.print_exc()
        elif problem:
            print(f"facelab {args.command}: error: {problem}", file=sys.stderr)
            progress.event("error", message=problem)
            return 1
        else:
            print(
                f"facelab {args.command}: internal error: {type(exc).__name__}: {exc} "
                "(run again with --debug for the traceback, and report it with `facelab info`)",
                file=sys.stderr,
            )
        progress.event("error", message=f"internal error: {type(exc).__name__}: {exc}")
        return 1
