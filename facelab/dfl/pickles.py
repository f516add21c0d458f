"""DeepFaceLab's pickles (`*.npy` weight dicts, `*_data.dat`, the APP15 dict of its aligned JPGs),
read through a restricted unpickler and written back for `export-dfl`.

Reading builds only plain containers, numbers, strings and numpy arrays: a pickle that names any
other global (a function to call) is refused before anything runs. Writing spells numpy's globals
`numpy.core.*`, the names DeepFaceLab's numpy 1.x knows (numpy 2 writes `numpy._core.*`).
"""

from __future__ import annotations

import io
import math
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


NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex: what DFL stores


def _numeric(dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS or dtype.fields or dtype.subdtype:
        raise PickleError(f"holds a {dtype!r} value: only numeric arrays are allowed")
    return dtype


def _dtype(spec, *args):
    """numpy.dtype, for the plain numeric type names DeepFaceLab's arrays have ('f4', 'u1', ...)."""
    if not isinstance(spec, str) or len(spec) > 8:
        raise PickleError(f"holds a dtype made from {str(spec)[:40]!r}: only numeric arrays are allowed")
    try:
        return _numeric(np.dtype(spec))
    except TypeError as exc:
        raise PickleError(f"holds an unknown dtype {spec!r}") from exc


def _scalar(dtype, data=None):
    """numpy's scalar(): a numeric value from its bytes."""
    dtype = _numeric(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise PickleError(f"holds a damaged {dtype} scalar")
    return np.frombuffer(data, dtype)[0]


def _check_build(inst, state) -> None:
    """What BUILD may set: a plain numeric dtype's own state, or an array's shape, dtype and exactly
    its bytes. numpy's __setstate__ trusts both (a dtype's flags may claim it holds objects, which
    left numpy internal errors behind in the fuzz runs)."""
    if isinstance(inst, np.dtype):
        plain = isinstance(state, tuple) and len(state) == 8 and state[0] == 3
        if not plain or state[1] not in ("<", ">", "|", "=") or state[2:] != (None, None, None, -1, -1, 0):
            raise PickleError("holds a damaged dtype")
        return
    if isinstance(inst, np.ndarray):
        ok = isinstance(state, tuple) and len(state) == 5 and state[0] == 1
        shape = state[1] if ok else None
        ok = ok and isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)
        ok = ok and isinstance(state[2], np.dtype) and type(state[3]) is bool and type(state[4]) is bytes
        if not ok:
            raise PickleError("holds a damaged array")
        dtype = _numeric(state[2])
        if len(state[4]) != math.prod(shape) * dtype.itemsize:
            raise PickleError(f"holds an array of shape {shape} with {len(state[4])} bytes of data")
        return
    raise PickleError(f"sets the state of a {type(inst).__name__}: only numpy arrays are allowed")


class _Restricted(pickle._Unpickler):  # the Python unpickler: its BUILD can be checked
    dispatch = dict(pickle._Unpickler.dispatch)
    _GUARDED = {"dtype": _dtype, "scalar": _scalar}

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise PickleError(f"refused to load {module}.{name} from a pickle: only numpy arrays are allowed")
        return self._GUARDED.get(name) or super().find_class(module, name)

    def load_build(self):
        _check_build(self.stack[-2], self.stack[-1])
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


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

