"""Real time: `export` (a model for DeepFaceLive, as .dfm or .onnx)."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.cli.common import workspace_from
from facelab.progress import say


def register_export(sub, common) -> None:
    p = sub.add_parser(
        "export", parents=[common], help="write a model as a .dfm for DeepFaceLive (or plain .onnx)",
        description="Export a Quick96, SAEHD, AMP or XSeg model as a plain ONNX file with DeepFaceLab's "
        "exporter's tensor names (in_face:0 -> out_face_mask:0, out_celeb_face:0, out_celeb_face_mask:0; "
        "AMP adds morph_value:0; XSeg gives out_mask:0). The file is checked with onnxruntime against "
        "PyTorch on real aligned faces before it is written.",
    )  # fmt: skip
    p.add_argument("--model", help="model name (default: the most recently saved model)")
    p.add_argument("--format", choices=("dfm", "onnx"), default="dfm",
                   help="dfm (DeepFaceLive's extension, default) or onnx: the same contents")  # fmt: skip
    p.add_argument("--fp16", action="store_true", help="store the weights in float16: half the file size")
    p.add_argument("--out", type=Path, help="the file (default: model/<name>.<format>)")
    p.add_argument("--faces", type=Path, metavar="DIR", help="aligned faces to check the export on "
                   "(default: data_dst/aligned, then data_src)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    p.set_defaults(handler=cmd_export)


def run_export(args: argparse.Namespace, class_name: str | None = None, exclude: tuple[str, ...] = ()) -> int:
    from facelab.dfm.export import export
    from facelab.models.folder import find_model

    ws = workspace_from(args)
    folder = find_model(ws.model_dir, args.model, class_name, exclude=exclude)
    out = args.out or ws.model_dir / f"{folder.name}.{args.format}"
    dirs = [args.faces] if args.faces else [ws.aligned_dir("dst"), ws.aligned_dir("src")]
    done = export(folder, out, dirs, fp16=args.fp16, overwrite=args.overwrite)
    worst = max(done.max_error.values())
    size = done.path.stat().st_size / 1e6
    say(f"wrote {done.path} ({size:.1f} MB): {folder.path.name}, {done.resolution} px, "
        f"inputs {', '.join(done.inputs)}, outputs {', '.join(done.outputs)}; onnxruntime matches PyTorch "
        f"within {worst:.1g} on {done.faces_checked} real faces")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return run_export(args)

