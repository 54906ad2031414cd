"""The folder layout is the pipeline: imports only point down the three floors.

The same holds for the tests: a stage's tests (tests/catalog, tests/ingest, ...) and the
shared test code they load (tests/conftest.py, tests/helpers.py, ...) test the stage through
its own functions and never reach the top floor, ``corpus``: not by an import, and not by
running its commands in a subprocess. The commands are tested in tests/corpus/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = "corpus"
STAGES = {"ingest", "noise", "train", "sql"}
ALLOWED = {
    "catalog": set(),
    **{stage: {"catalog"} for stage in STAGES},
    TOP: {"catalog", *STAGES},
}
# A module path of the top floor as a string: `python -m corpus.cli`, importlib.import_module.
_TOP_MODULE = re.compile(rf"{TOP}(\.\w+)+")
# Python source in a string (a script for `python -c`) that imports the top floor.
_TOP_IMPORT = re.compile(rf"^\s*(from|import)\s+{TOP}\b", re.MULTILINE)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _runs_top_floor(path: Path) -> list[str]:
    """Where a file reaches the top floor without an import statement: a string naming one
    of its modules (``-m corpus.cli``), a script string importing it, or a command line
    starting with the ``corpus`` executable."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            script = _TOP_IMPORT.search(node.value)
            if _TOP_MODULE.fullmatch(node.value) or script:
                what = script.group(0).strip() if script else node.value
                found.append(f"line {node.lineno}: {what!r}")
        elif isinstance(node, ast.List | ast.Tuple) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value == TOP:
                found.append(f"line {node.lineno}: runs the {TOP} executable")
    return found


def test_imports_only_point_down():
    bad = []
    for package, allowed in ALLOWED.items():
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"package {package}/ is missing"
        for f in files:
            ours = _imports(f) & set(ALLOWED)
            for target in ours - allowed - {package}:
                bad.append(f"{f.relative_to(ROOT)} imports {target}")
            if package != TOP:  # nor reach the top floor through a string
                bad += [f"{f.relative_to(ROOT)} {how}" for how in _runs_top_floor(f)]
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_stage_tests_never_reach_the_top_floor():
    tests = ROOT / "tests"
    files = [f for f in sorted(tests.glob("*.py")) if f.name != Path(__file__).name]
    for package in sorted(ALLOWED.keys() - {TOP}):
        folder = tests / package
        assert folder.is_dir(), f"tests/{package}/ is missing"
        files += sorted(folder.rglob("*.py"))
    bad = []
    for f in files:
        if TOP in _imports(f):
            bad.append(f"{f.relative_to(ROOT)} imports {TOP}")
        bad += [f"{f.relative_to(ROOT)} {how}" for how in _runs_top_floor(f)]
    assert not bad, (f"stage tests reach the top floor (test commands in tests/{TOP}/):\n"
                     + "\n".join(bad))
