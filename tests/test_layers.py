"""The folder layout is the pipeline: imports only point down the three floors."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"ingest", "noise", "train", "sql"}
ALLOWED = {
    "catalog": set(),
    **{stage: {"catalog"} for stage in STAGES},
    "corpus": {"catalog", *STAGES},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
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
    assert not bad, "layering violations:\n" + "\n".join(bad)
