"""The readers of files that come from outside, each as a fuzz target: seeds (real files from the
committed corpus, plus DeepFaceLab's own files from ../shared when present), how a mutated input is
made (bytes, or the parsed data damaged and written back) and how facelab reads it.

A target's `read(data, tmp)` puts `data` where facelab expects the file under the empty folder
`tmp` and reads it the way the workflow does. Allowed outcomes: it returns, or it raises
facelab's own error type (FacelabError, which every clean one-line error is).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from hypothesis import strategies as st

from tests.fuzz import mutate

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ROOT = HERE.parents[1]
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "models_v1" / "tiny_Quick96"
SHARED_DFL = ROOT.parent / "shared" / "dfl-files"


@dataclass
class Target:
    name: str
    read: Callable[[bytes, Path], object]
    seeds: Callable[[], list[bytes]]
    structured: Callable[[list[bytes]], st.SearchStrategy[bytes]] | None = None  # parse, damage, write
    notes: list[str] = field(default_factory=list)

    def inputs(self) -> st.SearchStrategy[bytes]:
        seeds = self.seeds()
        strategies = [mutate.byte_damage(seeds)]
        if self.structured is not None:
            strategies.append(self.structured(seeds))
        return st.one_of(strategies)


def _files(*patterns: str) -> Callable[[], list[bytes]]:
    def load() -> list[bytes]:
        found = [p for pat in patterns for p in sorted(CORPUS.glob(pat))]
        assert found, f"no seeds for {patterns} in {CORPUS}"
        return [p.read_bytes() for p in found]

    return load


# --------------------------------------------------------------------------- structured writers
def _json_trees(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    trees = [json.loads(s) for s in seeds]
    return mutate.tree_damage(trees, mutate.json_values).map(_dump_json)


def _dump_json(tree) -> bytes:
    try:
        return json.dumps(tree).encode()
    except (RecursionError, ValueError, TypeError):
        return b"[]"


def _yaml_trees(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    trees = [yaml.safe_load(s) for s in seeds]

    def dump(tree) -> bytes:
        try:
            return yaml.safe_dump(tree).encode()
        except (RecursionError, yaml.YAMLError):
            return b""

    return mutate.tree_damage(trees, mutate.json_values).map(dump)


def _dfl_pickles(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    from facelab.dfl import pickles

    trees = [pickles.loads(s) for s in seeds]

    def dump(tree) -> bytes:
        buf = io.BytesIO()
        try:
            pickles._DflPickler(buf, protocol=4).dump(tree)
        except (RecursionError, pickle.PicklingError, TypeError, ValueError):
            return b""
        return buf.getvalue()

    return mutate.tree_damage(trees, mutate.pickle_values).map(dump)


def _aligned_payloads(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """The face metadata of each seed (ours: JSON; DeepFaceLab's: a pickled dict) damaged, and
    put back into the same image."""
    from facelab.faces import meta

    jpeg_ours = [s for s in seeds if s[:2] == b"\xff\xd8" and meta.written_by(s) == "facelab"]
    png_ours = [s for s in seeds if s[:4] == b"\x89PNG"]
    dfl = [s for s in seeds if meta.written_by(s) == "deepfacelab"]
    image = jpeg_ours[0]
    trees = [meta.parse(s).to_json() for s in jpeg_ours + png_ours]
    ours = mutate.tree_damage(trees, mutate.json_values).map(_dump_json)
    out = [
        st.builds(meta._jpeg_insert, st.sampled_from(jpeg_ours), ours),
        st.builds(meta._png_insert, st.sampled_from(png_ours), ours),
    ]
    if dfl:
        from facelab.dfl import pickles

        def dfl_app15(payload: bytes) -> bytes:
            payload = payload[:65533]
            return image[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + image[2:]

        out.append(_dfl_pickles([_app15(s) for s in dfl]).map(dfl_app15))
        del pickles
    return st.one_of(out)


def _app15(jpeg: bytes) -> bytes:
    start = jpeg.index(b"\xff\xef")
    length = struct.unpack(">H", jpeg[start + 2 : start + 4])[0]
    return jpeg[start + 4 : start + 2 + length]


# ------------------------------------------------------------------------------------ readers
def read_aligned(data: bytes, tmp: Path):
    """What extraction's resume, sort, training and merge read of an aligned face: its metadata
    (through load_faceset), then its pixels."""
    from facelab.faces.faceset import load_faceset
    from facelab.media.images import read_image

    folder = tmp / "aligned"
    folder.mkdir()
    name = "00001_0.png" if data[:4] == b"\x89PNG" else "00001_0.jpg"
    (folder / name).write_bytes(data)
    fs = load_faceset(folder)
    for face in fs.faces:
        read_image(face.path)
        face.meta.to_json()
    return fs


@cache
def _dfl_model_dir() -> Path:
    """A tiny SAEHD in DeepFaceLab's files, written once per process (its parts are megabytes)."""
    from tests.fuzz.make_corpus import dfl_model

    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"facelab-fuzz-dfl-{os.getpid()}"
    if not out.exists():
        dfl_model(out.with_suffix(".tmp"))
        os.replace(out.with_suffix(".tmp"), out)
    return out


def _dfl_import(part: str) -> Callable[[bytes, Path], object]:
    def read(data: bytes, tmp: Path):
        from facelab.dfl.models import import_model

        src = tmp / "dfl"
        src.mkdir()
        for p in _dfl_model_dir().iterdir():
            (src / p.name).symlink_to(p)
        target = next(src.glob(f"*_{part}"))
        target.unlink()
        target.write_bytes(data)
        return import_model(src, tmp / "model")

    return read


def _dfl_part_seeds(part: str) -> Callable[[], list[bytes]]:
    def load() -> list[bytes]:
        seeds = [next(_dfl_model_dir().glob(f"*_{part}")).read_bytes()]
        seeds += [
            p.read_bytes()
            for p in sorted(SHARED_DFL.glob(f"model_*/*_{part}"))
            if p.stat().st_size < 4_000_000
        ]
        return seeds

    return load


def read_pickle(data: bytes, tmp: Path):
    from facelab.dfl import pickles

    path = tmp / "x.npy"
    path.write_bytes(data)
    return pickles.load(path)


def _model_file(name: str) -> Callable[[bytes, Path], object]:
    """The model folder with `name` replaced, read as merge (load_network) and a resume would."""

    def read(data: bytes, tmp: Path):
        from facelab.models.folder import ModelFolder, load_network
        from facelab.train.setup import saved_progress

        folder = tmp / "model" / FIXTURE_MODEL.name
        folder.mkdir(parents=True)
        for p in FIXTURE_MODEL.iterdir():
            (folder / p.name).symlink_to(p)
        (folder / name).unlink()
        (folder / name).write_bytes(data)
        mf = ModelFolder(folder)
        mf.problem()
        mf.restore_hint()
        _, ckpt = load_network(mf)
        return saved_progress(mf, ckpt.state)

    return read


def read_merge_session(data: bytes, tmp: Path):
    from facelab.merge.session import MergeSession

    path = tmp / "merge_session.json"
    path.write_bytes(data)
    s = MergeSession.load(path)
    return [s.for_frame(n) for n in (0, 1, 2, 10**9)]


def read_run_state(data: bytes, tmp: Path):
    from facelab.run import Run, RunOptions
    from facelab.workspace import Workspace

    ws = Workspace(tmp)
    (tmp / "run.json").write_bytes(data)
    return Run(ws, RunOptions(src=Path("/videos/src.mp4"), dst=Path("/videos/dst.mp4"))).state


def read_live(data: bytes, tmp: Path):
    from facelab.models.folder import LIVE, ModelFolder
    from facelab.train.report import read_live

    folder = tmp / "m_Quick96"
    folder.mkdir()
    for p in FIXTURE_MODEL.iterdir():
        (folder / p.name).symlink_to(p)
    (folder / LIVE).write_bytes(data)
    live = read_live(ModelFolder(folder))
    json.dumps(live)  # the UI sends it as JSON
    return live


def read_command(data: bytes, tmp: Path):
    from facelab.models.folder import COMMAND
    from facelab.train.keys import take_command

    (tmp / COMMAND).write_bytes(data)
    return take_command(tmp)


def read_video_record(data: bytes, tmp: Path):
    from facelab.media.probe import read_video_record

    path = tmp / "data_dst_video.json"
    path.write_bytes(data)
    got = read_video_record(path)
    if got is not None:
        info, _ = got
        return float(info.fps_fraction), info.width * info.height
    return got


def _config(options: Callable[[], list], suffix: str) -> Callable[[bytes, Path], object]:
    def read(data: bytes, tmp: Path):
        from facelab.options import load_config

        path = tmp / f"settings{suffix}"
        path.write_bytes(data)
        return load_config(path, options())

    return read


def _train_options() -> list:
    from facelab.train import model_options

    return list(model_options.specs("saehd").values())


def _merge_options() -> list:
    from facelab.merge.settings import OPTIONS

    return OPTIONS


def read_labels(data: bytes, tmp: Path):
    from facelab.xseg.labels import import_labels

    folder = tmp / "aligned"
    folder.mkdir()
    shutil.copy(CORPUS / "aligned" / "facelab.jpg", folder / "00000_0.jpg")
    (tmp / "labels.json").write_bytes(data)
    return import_labels(tmp / "labels.json", folder)


def read_extract_journal(data: bytes, tmp: Path):
    from facelab.faces.extract import earlier_options, read_journal

    (tmp / "aligned").mkdir()
    from facelab.faces.extract import JOURNAL

    (tmp / "aligned" / JOURNAL).write_bytes(data)
    return read_journal(tmp / "aligned"), earlier_options(tmp / "aligned")


def read_merge_journal(data: bytes, tmp: Path):
    from facelab.merge.session import JOURNAL, merged_by_other, read_journal

    (tmp / JOURNAL).write_bytes(data)
    return read_journal(tmp), merged_by_other(tmp, "x_Quick96")


def _journal_seeds() -> list[bytes]:
    return [
        b'{"settings": {"face_type": "whole", "size": 512}}\n{"frame": "00001.jpg", "faces": 1}\n{"fr',
        b'{"frame": "00001.jpg", "hash": "0f3a", "model": "m_Quick96"}\n'
        b'{"frame": "00002.jpg", "hash": "1"}\n',
    ]


def read_dfm(data: bytes, tmp: Path):
    from facelab.dfm.runtime import DFMModel

    (tmp / "m.dfm").write_bytes(data)
    return DFMModel(tmp / "m.dfm", device="cpu").res


def _dfm_seeds() -> list[bytes]:
    seeds = [
        p.read_bytes() for p in sorted(SHARED_DFL.glob("exported_dfm/*.dfm")) if p.stat().st_size < 4_000_000
    ]
    return seeds + [_tiny_dfm()]


@cache
def _tiny_dfm() -> bytes:
    """A .dfm facelab exports from the v1 fixture (random tiny Quick96), once per process."""
    import tempfile

    from facelab.dfm.export import export
    from facelab.models.folder import ModelFolder

    with tempfile.TemporaryDirectory() as t:
        out = Path(t) / "tiny.dfm"
        export(ModelFolder(FIXTURE_MODEL), out, face_dirs=[CORPUS / "aligned"])
        return out.read_bytes()


TARGETS = {
    t.name: t
    for t in [
        Target("aligned", read_aligned, _files("aligned/*"), _aligned_payloads),
        Target("dfl-pickle", read_pickle, _files("dfl_model/*.dat"), _dfl_pickles),
        Target("dfl-data", _dfl_import("data.dat"), _dfl_part_seeds("data.dat"), _dfl_pickles),
        Target("dfl-weights", _dfl_import("inter.npy"), _dfl_part_seeds("inter.npy"), _dfl_pickles),
        Target("config.json", _model_file("config.json"), _files("json/config.json"), _json_trees),
        Target("state.json", _model_file("state.json"), _files("json/state.json"), _json_trees),
        Target("merge_session.json", read_merge_session, _files("json/merge_session.json"), _json_trees),
        Target("run.json", read_run_state, _files("json/run.json"), _json_trees),
        Target("live.json", read_live, _files("json/live.json"), _json_trees),
        Target("video record", read_video_record, _files("json/data_dst_video.json"), _json_trees),
        Target("command", read_command, lambda: [b"s", b"enter\n", b"p"]),
        Target("--config train", _config(_train_options, ".yaml"), _files("config/saehd.yaml"), _yaml_trees),
        Target("--config merge", _config(_merge_options, ".yaml"), _files("config/merge.yaml"), _yaml_trees),
        Target("--config json", _config(_merge_options, ".json"), _files("config/merge.json"), _json_trees),
        Target("xseg labels", read_labels, _files("labels/*.json"), _json_trees),
        Target("extract journal", read_extract_journal, _journal_seeds),
        Target("merge journal", read_merge_journal, _journal_seeds),
        Target(".dfm", read_dfm, _dfm_seeds),
    ]
}
