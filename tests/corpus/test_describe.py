"""`corpus describe`: every table with its description, every column with its meaning."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from catalog import TABLE_NAMES, TABLES
from corpus.cli import cli


def describe(*args: str):
    return CliRunner().invoke(cli, ["describe", *args], obj={})


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_describe_prints_every_column_of_the_table(name):
    s = TABLES[name]
    got = json.loads(describe(name, "--format", "json").output)
    assert (got["table"], got["description"], got["keys"]) == (name, s.description,
                                                                list(s.keys))
    assert [c["name"] for c in got["columns"]] == s.schema.names
    for c in got["columns"]:
        f = s.schema.field(c["name"])
        assert c == {"name": f.name, "type": str(f.type), "nullable": f.nullable,
                     "key": f.name in s.keys, "description": s.doc(f.name)}
    out = describe(name)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    for c in s.columns:  # one row per column: its name, type, null, key and meaning
        row = next((ln for ln in lines if ln.startswith(f"│ {c.name} ")), None)
        assert row is not None, f"{name}.{c.name} not printed:\n{out.output}"
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells == [c.name, c.type, "yes" if c.nullable else "no",
                         "key" if c.key else "", c.description]


def test_describe_without_a_table_lists_every_table():
    got = json.loads(describe("--format", "json").output)
    assert [t["table"] for t in got] == list(TABLE_NAMES)
    assert all(t["description"] == TABLES[t["table"]].description for t in got)
    out = describe().output
    for name in TABLE_NAMES:
        assert f"│ {name} " in out and TABLES[name].description in out


def test_describe_a_misspelt_table_is_one_error_line():
    out = describe("scors")
    assert out.exit_code == 2
    assert "Did you mean 'scores'?" in out.output and "Traceback" not in out.output


def test_init_writes_the_descriptions_into_an_older_table(lakehouse, root_env):
    import pyarrow as pa
    from deltalake import DeltaTable

    from catalog.schemas import COMMENT

    def run(env, *args):
        p = subprocess.run([sys.executable, "-m", "corpus.cli", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p

    plain = pa.schema([f.remove_metadata() for f in TABLES["flags"].schema])
    uri = lakehouse.table_uri("flags")
    DeltaTable.create(uri, plain, name="flags", storage_options=lakehouse._opts)
    out = run(root_env, "init").stdout
    assert "created 13 table(s)" in out
    assert "wrote the column descriptions into 1 existing table(s): flags" in out
    dt = DeltaTable(uri, storage_options=lakehouse._opts)
    assert {f.name: f.metadata.get(COMMENT) for f in dt.schema().fields} == {
        c.name: c.description for c in TABLES["flags"].columns}
    assert "wrote the column descriptions" not in run(root_env, "init").stdout
