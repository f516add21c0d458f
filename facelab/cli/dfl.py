"""Coming from DeepFaceLab: `import-dfl` (a DFL model into model/), `export-dfl` (back again)."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.cli.common import workspace_from
from facelab.dfl import models as dfl_models
from facelab.models.folder import find_model
from facelab.progress import say


def register(sub, common) -> None:
    p = sub.add_parser(
        "import-dfl", parents=[common],
        help="import a DeepFaceLab model (Quick96, SAEHD, AMP) into model/<name>_<Class>/",
        description="Convert a DeepFaceLab model folder (or one model's files in it) into a facelab "
                    "model: weights, optimiser state, iteration, loss history and options. Nothing "
                    "in the DFL folder is changed; its pickles are read without running any code.",
    )  # fmt: skip
    p.add_argument("path", type=Path, help="DeepFaceLab's model folder, or one of a model's files")
    p.add_argument("--name", help="facelab name for the model (default: DeepFaceLab's name)")
    p.add_argument("--model-name", help="which model, when the folder holds several (DFL's <name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a facelab model of the same name (the old one goes to model/_trash/)")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser(
        "export-dfl", parents=[common], help="write a facelab SAEHD/AMP/Quick96 model as DeepFaceLab files",
        description="Write the model's weights, optimiser state, iteration, loss history and options as "
                    "DeepFaceLab's <name>_<Class>_*.npy / _data.dat files, which DeepFaceLab loads.",
    )  # fmt: skip
    p.add_argument("name", help="the facelab model")
    p.add_argument("--out", type=Path, help="folder for the DFL files (default: <workspace>/model_dfl)")
    p.add_argument("--kind", help="model kind, when one name has several (e.g. SAEHD)")
    p.add_argument("--overwrite", action="store_true", help="replace DFL files of the same name in --out")
    p.set_defaults(handler=cmd_export)


def cmd_import(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    done = dfl_models.import_model(args.path, ws.model_dir, args.name, args.model_name, args.overwrite)
    if done.trashed:
        say(f"the previous {done.folder.path.name} went to {done.trashed}")
    for note in done.notes:
        say(f"  not imported: {note}")
    say(f"imported DeepFaceLab {done.dfl} at iteration {done.iteration} into {done.folder}")
    say(f"continue training: facelab train --model {dfl_models.CLASSES[done.dfl.class_name]} "
        f"--name {done.folder.name}")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    kind = {k.lower(): k for k in dfl_models.CLASSES}.get(args.kind.lower()) if args.kind else None
    folder = find_model(ws.model_dir, args.name, kind)
    out = args.out or ws.root / "model_dfl"
    files = dfl_models.export_model(folder, out, args.overwrite)
    say(f"wrote {len(files)} DeepFaceLab files for {folder.name} into {out}")
    return 0
