"""merge: step 6, the model's faces into every dst frame."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from facelab import prompts
from facelab.cli.argtypes import int_in
from facelab.cli.common import add_mark_arguments, face_model, stamp_from, workspace_from
from facelab.faces.align import FACE_TYPE_NAMES
from facelab.options import add_arguments, load_config
from facelab.progress import say


def frame_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a frame range: use A-B (e.g. 120-180) or one frame"
        )
    a, b = int(m.group(1)), int(m.group(2) or m.group(1))
    if b < a:
        raise argparse.ArgumentTypeError(f"{text!r}: the range must run forward (A <= B)")
    return a, b


def register(sub, common) -> None:
    from facelab.device import PRECISIONS
    from facelab.merge.settings import OPTIONS
    from facelab.precision import PRECISION_HELP

    p = sub.add_parser(
        "merge",
        parents=[common],
        help="6. put the model's faces into every dst frame -> data_dst/merged/ and merged_mask/",
        description="Merge with a trained model. Settings are kept in the model folder's merge session: a "
        "rerun resumes with them; new settings re-merge the frames they change; --frames A-B gives a range "
        "its own settings. Every setting can also come from --config FILE (YAML or JSON).",
    )
    p.add_argument("--model", help="model name, or an exported FILE.dfm (DeepFaceLive's or facelab's) "
                   "(default: the most recently saved model)")
    p.add_argument("--face-type", choices=FACE_TYPE_NAMES,
                   help="how a .dfm's faces are cropped, when the file does not say (facelab's exports do): "
                   "default whole, as DeepFaceLive's public models")
    p.add_argument("--xseg-model", metavar="NAME",
                   help="the XSeg model for the xseg mask modes (default: xseg)")  # fmt: skip
    p.add_argument("--config", type=Path, help="YAML or JSON file of settings (flags override it)")
    p.add_argument(
        "--frames", type=frame_range, metavar="A-B", help="merge only these frames, with these settings"
    )
    p.add_argument(
        "--preview", type=int, metavar="FRAME", help="write one merged frame and its mask, then stop"
    )
    p.add_argument(
        "--fresh-session", action="store_true", help="forget the saved settings and start from defaults"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace merged frames that another model made"
    )
    p.add_argument("--workers", type=int_in(1, 64), help="blending processes (default: one per core)")
    add_mark_arguments(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    add_arguments(p.add_argument_group("merge settings"), OPTIONS)
    p.set_defaults(handler=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from facelab.merge.pipeline import MergeModel, merge, preview_frame
    from facelab.merge.session import MergeSession, SessionError
    from facelab.merge.settings import OPTIONS
    from facelab.models.folder import CheckpointError

    ws = workspace_from(args)
    folder = face_model(ws, args.model)
    try:
        session = MergeSession.for_model(ws.model_dir, folder, fresh=args.fresh_session)
    except SessionError as exc:
        if not (prompts.interactive() and prompts.ask_bool(f"{exc}. Start a fresh session", True)):
            raise
        session = MergeSession.for_model(ws.model_dir, folder, fresh=True)
    changes = load_config(args.config, OPTIONS) if args.config else {}
    changes |= {o.name: getattr(args, o.name) for o in OPTIONS if getattr(args, o.name) is not None}
    try:
        model = MergeModel(folder, device=args.device, precision=args.precision, xseg=args.xseg_model,
                           model_root=ws.model_dir, face_type=args.face_type)  # fmt: skip
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{folder.restore_hint()}") from None
    if model.precision_choice is not None:
        say(model.precision_choice.line())
    if args.preview is not None:
        if changes:
            session.override(args.preview, args.preview, changes)
        out, out_mask = preview_frame(
            ws, model, session, args.preview, ws.root / "data_dst" / "merge_preview"
        )
        say(f"preview of frame {args.preview}: {out} and {out_mask}")
        return 0
    if args.frames:
        if changes:
            session.override(*args.frames, changes)
    elif changes:
        session.settings |= changes
    session.save()
    s = merge(ws, model, session, workers=args.workers, only=args.frames, overwrite=args.overwrite,
              stamp=stamp_from(args, model.mark()))  # fmt: skip
    fps = s.merged / s.seconds if s.seconds else 0
    say(
        f"merged {s.merged} frames ({s.faces} faces; {s.no_face} without a face, copied through) with "
        f"{model.name} in {s.seconds:.1f} s ({fps:.1f} frames/s); {s.skipped} already done "
        f"-> {ws.merged_dir}"
    )
    if s.missing:
        say(f"{ws.frames_dir('dst')} lacks {len(s.missing)} frames of the dst video (the first: "
            f"{s.missing[0]:05d}), so they could not be merged: restore them with "
            "`facelab extract-frames dst --overwrite` (the aligned faces stay), then merge again")
    changed = {
        k: v for k, v in session.settings.items() if v != next(o.default for o in OPTIONS if o.name == k)
    }
    say(
        f"settings (saved in {session.path.name}): "
        + (", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults")
    )
    return 0
