"""Hypothesis strategies that turn a seed file into the inputs a damaged, hostile or newer file
would be: byte-level damage (truncation, bit flips, inserted, deleted and duplicated runs, boundary
values, deep bracket nesting) and structured damage of the data a file holds (JSON, YAML or a
pickle): a node replaced by a value of the wrong type, a huge or non-finite number, a very long
string, a deep nest or a strange numpy array; a key removed or added."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

BOUNDARY = [
    b"\x00" * 4,
    b"\xff" * 4,
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\xff\xd8",
    b"\xff\xda",
    b"\x89PNG",
    b"IEND",
    b'"',
    b"\\",
    b"NaN",
    b"1e999",
    b"-0",
]
HUGE_INTS = [-1, 0, 2**31 - 1, 2**31, 2**63, -(2**63), 10**30, 4096, 100_000]
ODD_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]


def _deep(depth: int, leaf=0):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(HUGE_INTS)
    | st.floats()
    | st.sampled_from(ODD_FLOATS)
    | st.text(max_size=20)
    | st.integers(1_000, 200_000).map(lambda n: "x" * n)  # a very long string
    | st.integers(50, 400).map(_deep)
)
json_values = st.recursive(
    plain_leaves,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=8,
)

_shapes = st.lists(st.integers(0, 5), max_size=4).map(tuple)
_dtypes = st.sampled_from(["float32", "float64", "int64", "int8", "uint8", "bool", "complex64", "float16"])
def _array(shape: tuple, dtype: str, fill) -> np.ndarray:
    with np.errstate(all="ignore"):  # NaN or 1e30 into an int8 array: that is the point
        return np.full(shape, fill).astype(dtype, casting="unsafe")


arrays = st.builds(_array, _shapes, _dtypes, st.sampled_from([0, 1, -1, math.nan, math.inf, 1e30]))

numpy_scalars = st.builds(np.float64, st.floats()) | st.builds(np.int64, st.integers(-(2**63), 2**63 - 1))
pickle_values = st.recursive(
    plain_leaves | arrays | numpy_scalars,
    lambda c: (
        st.lists(c, max_size=4)
        | st.tuples(c, c)
        | st.dictionaries(st.text(max_size=8) | st.integers(), c, max_size=4)
    ),
    max_leaves=8,
)

_pos = st.integers(0, 2**32)  # a position anywhere in the file, taken modulo its length
byte_ops = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 512)),
    st.tuples(st.just("overwrite"), _pos, st.sampled_from(BOUNDARY)),
    st.tuples(st.just("duplicate"), _pos, st.integers(1, 512), _pos),
    st.tuples(
        st.just("nest"), _pos, st.sampled_from([b"[", b'{"a":', b"- ", b"(", b"]"]), st.integers(10, 100_000)
    ),
)


def damage(data: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(data)
    for op in ops:
        n = max(len(b), 1)
        at = op[1] % n
        if op[0] == "flip" and b:
            b[at] ^= 1 << op[2]
        elif op[0] == "truncate":
            del b[at:]
        elif op[0] == "insert":
            b[at:at] = op[2]
        elif op[0] == "delete":
            del b[at : at + op[2]]
        elif op[0] == "overwrite":
            b[at : at + len(op[2])] = op[2]
        elif op[0] == "duplicate":
            b[op[3] % n : op[3] % n] = b[at : at + op[2]]
        elif op[0] == "nest":
            b[at:at] = op[2] * op[3]
    return bytes(b)


def byte_damage(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(damage, st.sampled_from(seeds), st.lists(byte_ops, min_size=1, max_size=6))


tree_ops = st.lists(
    st.tuples(st.sampled_from(["replace", "delete", "add", "wrap"]), _pos, st.text(max_size=12)),
    min_size=1,
    max_size=4,
)


def _nodes(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from _nodes(v, (*path, i))


def _set(tree, path, value):
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, tuple):  # rebuild the tuple along the path
        items = list(parent)
        items[path[-1]] = value
        return _set(tree, path[:-1], tuple(items))
    parent[path[-1]] = value
    return tree


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def mutate_tree(tree, ops: list[tuple], values: list):
    """`tree` with each op applied at the node it picks; `values` are drawn, one per op."""
    import copy

    tree = copy.deepcopy(tree)
    for (op, pos, name), value in zip(ops, values, strict=True):
        paths = list(_nodes(tree))
        path = paths[pos % len(paths)]
        node = _get(tree, path)
        if op == "replace":
            tree = _set(tree, path, value)
        elif op == "delete" and path:
            parent = _get(tree, path[:-1])
            if isinstance(parent, dict | list):
                del parent[path[-1]]
        elif op == "add" and isinstance(node, dict):
            node[name] = value
        elif op == "add" and isinstance(node, list):
            node.append(value)
        elif op == "wrap":
            tree = _set(tree, path, [node])
    return tree


def tree_damage(seeds: list, values: st.SearchStrategy) -> st.SearchStrategy:
    """Mutated copies of the parsed seed trees."""
    return st.sampled_from(seeds).flatmap(
        lambda seed: tree_ops.flatmap(
            lambda ops: st.lists(values, min_size=len(ops), max_size=len(ops)).map(
                lambda vs: mutate_tree(seed, ops, vs)
            )
        )
    )
