"""Real time: `export` (a model for DeepFaceLive, as .dfm or .onnx) and `live` (swap a camera, a stream
or a file as it plays)."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path

from facelab.cli.common import add_mark_arguments, face_model, stamp_from, workspace_from
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
    add_export_options(p, "dfm")
    p.set_defaults(handler=cmd_export)


def add_export_options(p, default_format: str) -> None:
    """The flags `export` and `xseg export` share."""
    p.add_argument("--format", choices=("dfm", "onnx"), default=default_format,
                   help=f"dfm (DeepFaceLive's extension) or onnx, the same contents (default: "
                   f"{default_format})")  # fmt: skip
    p.add_argument("--fp16", action="store_true", help="store the weights in float16: half the file size")
    p.add_argument("--out", type=Path, help="the file (default: model/<name>.<format>)")
    p.add_argument("--faces", type=Path, metavar="DIR", help="aligned faces to check the export on "
                   "(default: data_dst/aligned, then data_src)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")


def cmd_export(args: argparse.Namespace, class_name: str | None = None) -> int:
    from facelab.dfm.export import export
    from facelab.models.folder import find_model

    ws = workspace_from(args)
    folder = find_model(ws.model_dir, args.model, class_name)
    out = args.out or ws.model_dir / f"{folder.name}.{args.format}"
    dirs = [args.faces] if args.faces else [ws.aligned_dir("dst"), ws.aligned_dir("src")]
    done = export(folder, out, dirs, fp16=args.fp16, overwrite=args.overwrite)
    worst = max(done.max_error.values())
    size = done.path.stat().st_size / 1e6
    say(f"wrote {done.path} ({size:.1f} MB): {folder.path.name}, {done.resolution} px, "
        f"inputs {', '.join(done.inputs)}, outputs {', '.join(done.outputs)}; onnxruntime matches PyTorch "
        f"within {worst:.1g} on {done.faces_checked} real faces")  # fmt: skip
    return 0


def register_live(sub, common) -> None:
    from facelab.cli.ui import add_server_options
    from facelab.device import PRECISIONS
    from facelab.faces.align import FACE_TYPE_NAMES
    from facelab.live.session import SCHEDULES
    from facelab.merge.settings import OPTIONS
    from facelab.options import add_arguments
    from facelab.precision import PRECISION_HELP

    p = sub.add_parser(
        "live", parents=[common], help="swap faces live: a webcam, a stream or a file, in real time",
        description="Swap the faces of a camera (0, /dev/video0), a stream (rtsp://, http://...) or a video "
        "file as it plays, with a trained model or a .dfm. Faces are detected on a downscaled frame and "
        "tracked between detections, then go through the model and merge's blend. When the pipeline "
        "falls behind a live input, frames are dropped rather than lagging. Merge settings start from the "
        "model's merge session.",
    )  # fmt: skip
    p.add_argument("--model", help="model name or FILE.dfm (default: the most recently saved model)")
    p.add_argument("--input", required=True, metavar="0|/dev/videoN|URL|FILE",
                   help="a camera index or device, a stream URL, or a video file")  # fmt: skip
    p.add_argument("--output", default="browser", metavar="browser|window|FILE.mp4|v4l2:/dev/videoN",
                   help="where the swapped video goes (default: browser, a page of facelab ui)")  # fmt: skip
    p.add_argument("--loop", action="store_true", help="start a file input again when it ends")
    p.add_argument("--realtime", action="store_true",
                   help="play a file input at its own frame rate, dropping frames as a camera would "
                   "(without it every frame is swapped, as fast as it can be)")  # fmt: skip
    who = p.add_mutually_exclusive_group()
    who.add_argument("--reference", type=Path, metavar="PHOTO", help="swap only this person's face")
    who.add_argument("--all-faces", action="store_true", help="swap every face (default: the largest)")
    p.add_argument("--face-type", choices=FACE_TYPE_NAMES, help="how a .dfm's faces are cropped, when the "
                   "file does not say (default: whole)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    add_mark_arguments(p)
    p.add_argument("--config", type=Path, help="YAML or JSON file of merge settings (flags override it)")
    p.add_argument("--open-timeout", type=float, default=10.0, metavar="S",
                   help="give up opening a stream after S seconds (default: 10)")  # fmt: skip
    p.add_argument("--schedule", choices=SCHEDULES, default="auto",
                   help="run the steps on their own threads or one after another; auto times both on the "
                   "first frames and keeps the faster (default)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--model-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # ms; tests of dropping
    add_server_options(p)
    add_arguments(p.add_argument_group("merge settings"), OPTIONS)
    p.set_defaults(handler=cmd_live)


@dataclass
class LiveControl:
    """What the live page of the browser output talks to (see ui/live.py)."""

    session: object  # live.session.LiveSession
    source: object  # live.sources.Source
    swapper: object  # live.swapper.Swapper
    model: object  # merge.pipeline.MergeModel
    browser: object  # live.outputs.BrowserOutput


def _settings(args: argparse.Namespace, ws, spec) -> dict:
    """The model's merge session (if it has one), then --config, then the flags."""
    from facelab.merge.session import MergeSession, SessionError
    from facelab.merge.settings import OPTIONS
    from facelab.options import load_config

    try:
        saved = MergeSession.for_model(ws.model_dir, spec).settings
    except SessionError:
        saved = {}
    changes = load_config(args.config, OPTIONS) if args.config else {}
    changes |= {o.name: getattr(args, o.name) for o in OPTIONS if getattr(args, o.name) is not None}
    return saved | changes


def _output(args: argparse.Namespace, source, mark: dict):
    from facelab.errors import UsageError
    from facelab.live import outputs

    spec = args.output
    if spec == "browser":
        return outputs.BrowserOutput()
    if spec == "window":
        return outputs.WindowOutput()
    if spec.startswith("v4l2:"):
        return outputs.V4L2Output(spec.removeprefix("v4l2:"), source.fps)
    if "://" in spec or spec.startswith("/dev/"):
        raise UsageError(f"--output {spec}: use browser, window, a file such as out.mp4, or v4l2:/dev/videoN")
    audio = source.path if source.kind == "file" else None
    mark = None if args.no_mark else mark
    return outputs.FileOutput(Path(spec), source.fps, audio, overwrite=args.overwrite, mark=mark)


def cmd_live(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from facelab.errors import UsageError
    from facelab.faces.identity import reference_descriptor
    from facelab.live.outputs import BrowserOutput
    from facelab.live.session import LiveSession
    from facelab.live.sources import Source
    from facelab.live.swapper import Swapper
    from facelab.merge.pipeline import MergeModel

    ws = workspace_from(args)
    spec = face_model(ws, args.model)
    settings = _settings(args, ws, spec)
    if settings.get("mode") == "raw-predict":
        raise UsageError("--mode raw-predict gives faces, not frames: choose another --mode for live")
    reference = reference_descriptor(args.reference) if args.reference else None
    server = None
    if args.output == "browser":
        from facelab.cli.ui import server_address, ui_modules

        uvicorn, create_app = ui_modules()
        token, url = server_address(args)
    model = MergeModel(spec, device=args.device, precision=args.precision, model_root=ws.model_dir,
                       face_type=args.face_type, batch=1)  # fmt: skip
    if model.precision_choice is not None:
        say(model.precision_choice.line())
    source = Source(args.input, args.realtime, args.open_timeout, loop=args.loop, say=say)
    try:
        swapper = Swapper(model, settings, source.fps, all_faces=args.all_faces, reference=reference)
        output = _output(args, source, model.mark())
    except BaseException:
        source.stop()
        raise
    session = LiveSession(source, swapper, [output], args.schedule, model_delay_s=args.model_delay / 1000,
                          stamp=stamp_from(args, None) if args.watermark else None)  # fmt: skip
    if isinstance(output, BrowserOutput):
        control = LiveControl(session, source, swapper, model, output)
        config = uvicorn.Config(create_app(ws.root, token, live=control), host=args.host, port=args.port,
                                log_level="warning")  # fmt: skip
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, name="live-ui", daemon=True).start()
        say(f"live page: open {url}#live  (Ctrl-C stops)")
    tty = sys.stderr.isatty()

    def show(stats) -> None:
        if tty:
            sys.stderr.write(f"\r{stats.line()}   ")
            sys.stderr.flush()

    backend = f"onnxruntime {model.dfm.provider}" if model.dfm else f"PyTorch {model.device}"
    say(f"live: {source.spec} ({source.kind}, {source.fps:.3g} fps) -> {args.output} with {model.name} "
        f"({backend})")  # fmt: skip
    stopped = False
    # Ctrl-C and a kill stop cleanly, also when this process was started with SIGINT ignored (Python
    # then installs no KeyboardInterrupt handler: found when the stream test ran after other tests).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        stats = session.run(on_stats=show)
    except KeyboardInterrupt:
        stopped = True
        session.stop()
        stats = session.snapshot()
    except BaseException:
        with contextlib.suppress(Exception):
            output.close()  # what was recorded before the error is kept
        raise
    finally:
        if server is not None:
            server.should_exit = True
    output.close()
    if tty:
        sys.stderr.write("\n")
    fps = stats.processed / stats.seconds if stats.seconds else 0.0
    where = f" -> {args.output}" if hasattr(output, "path") else ""
    probe = f" (timed {stats.probe_fps})" if stats.probe_fps else ""
    say(f"live {'stopped' if stopped else 'ended'}: {stats.processed} frames swapped ({stats.faces} faces) "
        f"in {stats.seconds:.1f} s, {fps:.1f} frames/s; {stats.captured} read, {stats.dropped} dropped; "
        f"latency {stats.latency_ms:.0f} ms; schedule {stats.schedule}{probe}{where}")  # fmt: skip
    return 130 if stopped else 0
