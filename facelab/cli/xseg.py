"""XSeg: `xseg train | apply | remove | remove-labels | fetch | labels export/import`."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab import prompts
from facelab.cli import live
from facelab.cli.common import workspace_from
from facelab.errors import FacelabError
from facelab.models.folder import find_model
from facelab.options import add_arguments
from facelab.progress import say
from facelab.workspace import SIDES
from facelab.xseg import labels


def register(sub, common) -> None:
    p = sub.add_parser("xseg", parents=[common],
                       help="XSeg occlusion masks: train, apply, remove, fetch, labels")  # fmt: skip
    xsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    from facelab.train.trainer import OPTIONS

    t = xsub.add_parser(
        "train", parents=[common], help="train an XSeg model on the labelled faces of src and dst",
        description="Train (or resume) model/<name>_XSeg/ on every face with XSeg polygons, with the same "
                    "engine as the face models: status line, preview, saves, backups, exact resume.",
    )  # fmt: skip
    t.add_argument("--name", default="xseg", help="model name (default: xseg)")
    t.add_argument("--resolution", type=int, help="mask size in pixels for a new model (default 256)")
    add_arguments(t, OPTIONS, {"batch": "the model's: 2 per side", "seed": "random"})
    t.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an XSeg option, repeatable (`--opt help` lists them)")  # fmt: skip
    t.add_argument("--override", action="store_true", help="change a resumed model's changeable options")
    t.set_defaults(handler=cmd_train, model="xseg", config=None, gpus=None, from_model=None,
                   pretrain_faces=None)  # fmt: skip

    a = xsub.add_parser("apply", parents=[common], help="store every face's predicted mask in its metadata")
    a.add_argument("side", choices=SIDES)
    a.add_argument("--model", default="xseg", help="the XSeg model (default: xseg)")
    a.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    _dir(a)
    a.set_defaults(handler=cmd_apply)

    r = xsub.add_parser("remove", parents=[common], help="delete the applied masks")
    r.add_argument("side", choices=SIDES)
    _dir(r)
    r.set_defaults(handler=cmd_remove)
    r = xsub.add_parser("remove-labels", parents=[common], help="delete the label polygons (asks; --yes)")
    r.add_argument("side", choices=SIDES)
    _dir(r)
    r.set_defaults(handler=cmd_remove_labels)

    f = xsub.add_parser("fetch", parents=[common], help="copy the labelled faces to data_<side>/aligned_xseg")
    f.add_argument("side", choices=SIDES)
    _dir(f)
    f.add_argument("--overwrite", action="store_true", help="replace different files of the same name there")
    f.set_defaults(handler=cmd_fetch)

    e = xsub.add_parser("export", parents=[common], help="write an XSeg model as ONNX (DeepFaceLab's layout)",
                        description="The same as `facelab export --model xseg`: in_face:0 -> out_mask:0.")
    e.add_argument("--model", default="xseg", help="the XSeg model (default: xseg)")
    live.add_export_options(e, "onnx")
    e.set_defaults(handler=cmd_export)

    lab = xsub.add_parser("labels", parents=[common], help="export or import the label polygons as JSON")
    lsub = lab.add_subparsers(dest="labels_action", metavar="export|import", required=True)
    for action, helptext in (("export", "write every labelled face's polygons to FILE.json"),
                             ("import", "set the faces' polygons from FILE.json")):  # fmt: skip
        q = lsub.add_parser(action, parents=[common], help=helptext)
        q.add_argument("file", type=Path)
        q.add_argument("--side", choices=(*SIDES, "both"), default="both" if action == "export" else "dst",
                       help="which faceset (export default: both; import default: dst)")  # fmt: skip
        _dir(q)
        q.set_defaults(handler=cmd_labels_export if action == "export" else cmd_labels_import)


def _dir(p) -> None:
    p.add_argument("--dir", type=Path, help="an aligned folder instead of data_<side>/aligned/")


def _folder(args: argparse.Namespace, side: str | None = None) -> Path:
    folder = args.dir or workspace_from(args).aligned_dir(side or args.side)
    if not folder.is_dir():
        raise FacelabError(f"{folder} does not exist: run `facelab extract-faces` first (or give --dir)")
    return folder


def cmd_train(args: argparse.Namespace) -> int:
    from facelab.cli.train import cmd_train as train

    if args.resolution:
        args.opt.append(f"resolution={args.resolution}")
    return train(args)


def cmd_apply(args: argparse.Namespace) -> int:
    from facelab.xseg.apply import XSegPredictor, apply_masks

    folder = _folder(args)
    model = XSegPredictor(find_model(workspace_from(args).model_dir, args.model, "XSeg"), args.device)
    done = apply_masks(folder, model)
    extra = f"; {len(done.damaged)} damaged images skipped (e.g. {done.damaged[0]})" if done.damaged else ""
    say(f"{folder}: masked {done.masked} faces with {model.id}, {done.already} already done{extra}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return live.cmd_export(args, "XSeg")


def cmd_remove(args: argparse.Namespace) -> int:
    folder = _folder(args)
    say(f"{folder}: removed the XSeg mask of {labels.remove_masks(folder)} faces")
    return 0


def cmd_remove_labels(args: argparse.Namespace) -> int:
    folder = _folder(args)
    what = f"every XSeg polygon in {folder}"
    if not prompts.confirm(f"deleting {what}", f"delete {what}"):
        say("kept")
        return 1
    say(f"{folder}: removed the polygons of {labels.remove_labels(folder)} faces")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    folder = _folder(args)
    target = folder.with_name(folder.name + "_xseg")
    copied, kept = labels.fetch(folder, target, args.overwrite)
    say(f"copied {copied} labelled faces to {target}"
        + (f"; {len(kept)} left alone, a different file of that name is there (--overwrite replaces)"
           if kept else ""))  # fmt: skip
    return 0


def cmd_labels_export(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    if args.dir or args.side != "both":
        folders = [_folder(args, args.side if args.side != "both" else "src")]
    else:  # both sides: the ones there are
        folders = [ws.aligned_dir(s) for s in SIDES if ws.aligned_dir(s).is_dir()] or [_folder(args, "src")]
    counts = labels.export_labels(folders, args.file)
    say(f"wrote {counts.polygons} polygons of {counts.faces} faces to {args.file}")
    return 0


def cmd_labels_import(args: argparse.Namespace) -> int:
    folder = _folder(args, args.side)
    c = labels.import_labels(args.file, folder)
    notes = [f"{c.dropped} polygons with fewer than 3 points dropped"] if c.dropped else []
    notes += [f"{c.clipped} points outside the image clipped to its edge"] if c.clipped else []
    notes += [f"{len(c.missing)} faces not in {folder} (e.g. {c.missing[0]})"] if c.missing else []
    warnings = "".join(f"; warning: {n}" for n in notes)
    say(f"set {c.polygons} polygons on {c.faces} faces in {folder}{warnings}")
    return 0
