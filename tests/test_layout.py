"""The layout rules the code keeps, checked from the source with `ast`: merge and train do not
import each other, and only the model folder's owner spells the folder's file names."""

from __future__ import annotations

import ast
from pathlib import Path

from facelab.models import folder

PACKAGE = Path(folder.__file__).resolve().parents[1]
OWNER = Path(folder.__file__).resolve()
FOLDER_FILES = {folder.CONFIG, folder.WEIGHTS, folder.OPTIMIZER, folder.STATE, folder.SUMMARY, folder.PREVIEW,
                folder.LIVE, folder.SESSION, folder.BACKUPS}  # fmt: skip


def modules() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, tree: ast.Module, root: Path = PACKAGE.parent) -> set[str]:
    """Every facelab module `path` (under `root`) imports, as dotted names."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("facelab")}


def docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_merge_and_train_do_not_import_each_other():
    found = []
    for path, tree in modules().items():
        stage = path.relative_to(PACKAGE).parts[0]
        other = {"merge": "facelab.train", "train": "facelab.merge"}.get(stage)
        if other:
            found += [f"{path.relative_to(PACKAGE)} imports {m}" for m in imported(path, tree)
                      if m == other or m.startswith(other + ".")]  # fmt: skip
    assert not found, found


def test_only_the_folder_module_spells_the_model_folder_files():
    found = []
    for path, tree in modules().items():
        if path == OWNER:
            continue
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno} {name}" for name in FOLDER_FILES
                          if name in node.value]  # fmt: skip
    assert not found, found


def test_the_checks_see_what_they_look_for(tmp_path: Path):
    """Guard against a check that cannot fail: the same rules catch a planted offender."""
    bad = tmp_path / "facelab" / "merge" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..train import trainer\nimport facelab.train.checkpoint\nNAME = 'x/live.json'\n")
    tree = ast.parse(bad.read_text())
    wanted = {"facelab.train", "facelab.train.trainer", "facelab.train.checkpoint"}
    assert wanted <= imported(bad, tree, tmp_path)
    assert any(isinstance(n, ast.Constant) and folder.LIVE in str(n.value) for n in ast.walk(tree))
