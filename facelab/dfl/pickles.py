"""DeepFaceLab's pickles (`*.npy` weight dicts, `*_data.dat`, the APP15 dict of its aligned JPGs),
read through a restricted unpickler and written back for `export-dfl`.

Reading builds only plain containers, numbers, strings and numpy arrays: a pickle that names any
other global (a function to call) is refused before anything runs. Writing spells numpy's globals
`numpy.core.*`, the names DeepFaceLab's numpy 1.x knows (numpy 2 writes `numpy._core.*`).
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path

# Everything a DeepFaceLab pickle legitimately needs: numpy arrays, their dtypes and scalars.
# (`_codecs.encode` rebuilds the bytes of arrays pickled with protocol 2; it only encodes a str.)
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class PickleError(FacelabError, ValueError):
    """A pickle that is damaged, truncated or unsafe."""


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise PickleError(f"refused to load {module}.{name} from a pickle: only numpy arrays are allowed")


def _check_plain(obj, depth: int = 0) -> None:
    """Object arrays could smuggle anything the unpickler built; plain data has none."""
    if depth > 64:
        raise PickleError("nested too deeply to be DeepFaceLab data")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise PickleError("holds an object array: only numeric arrays are allowed")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            _check_plain(v, depth + 1)


def _check_memo(data: bytes) -> None:
    """Refuse a pickle that stores into a memo slot far beyond its own size: `LONG_BINPUT 80891284`
    in a 14 KB file makes the unpickler grow its memo to 80 M entries (over a gigabyte). A real
    pickle numbers its memo entries in order, so no index exceeds the opcodes read so far."""
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data), 1):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count:
                raise PickleError(f"stores into memo slot {arg} after {count} opcodes: not a real pickle")
    except PickleError:
        raise
    except Exception:  # an unknown opcode, a cut argument: the unpickler below says which
        return


def loads(data: bytes):
    """The plain data in `data`; PickleError when it is unsafe, damaged or truncated."""
    _check_memo(data)
    try:
        obj = _Restricted(io.BytesIO(data)).load()
    except PickleError:
        raise
    except Exception as exc:  # truncated or garbled: EOFError, UnpicklingError, ValueError, ...
        raise PickleError(f"damaged or truncated ({type(exc).__name__}: {exc})") from exc
    _check_plain(obj)
    return obj


def load(path: Path):
    """`loads` of a file; the error names the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PickleError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return loads(data)
    except PickleError as exc:
        raise PickleError(f"{path}: {exc}") from None


class _DflPickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            name = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"numpy.core.{module[len('numpy._core.'):]}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump(path: Path, obj) -> None:
    """Write `obj` as DeepFaceLab does (a pickle), atomically, streaming into the file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _DflPickler(f, protocol=4).dump(obj)

