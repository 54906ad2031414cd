"""Column descriptions: declared once beside each schema, carried into the Delta metadata."""

from __future__ import annotations

import glob
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from catalog import TABLE_NAMES, TABLES, Lineage, TableNotFoundError, TableSpec
from catalog.schemas import COMMENT, column_doc

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _comments(dt: DeltaTable) -> dict[str, str | None]:
    return {f.name: (f.metadata or {}).get(COMMENT) for f in dt.schema().fields}


def test_every_column_of_every_table_has_a_one_line_description():
    for name in TABLE_NAMES:
        s = TABLES[name]
        assert s.description.strip() and "\n" not in s.description, name
        assert [c.name for c in s.columns] == s.schema.names
        for c in s.columns:
            assert c.description.strip(), f"{name}.{c.name} has no description"
            assert "\n" not in c.description and len(c.description) <= 120, f"{name}.{c.name}"
            assert c.description == s.doc(c.name) == column_doc(s.schema.field(c.name))
            assert c.key == (c.name in s.keys)
        # what data is written with: the same columns and types, without the descriptions
        assert s.data_schema.equals(s.schema)
        assert all(not f.metadata for f in s.data_schema)


def test_a_column_without_a_description_is_refused():
    schema = pa.schema([pa.field("a", pa.string(), metadata={COMMENT: "the a"}),
                        pa.field("b", pa.int64())])
    with pytest.raises(ValueError, match=r"columns \['b'\] have no description"):
        TableSpec("t", schema, ("a",), "a table")


def test_a_misspelt_table_name_gets_a_suggestion(lakehouse):
    with pytest.raises(TableNotFoundError, match=r"Did you mean 'scores'\? Known tables"):
        lakehouse.open("scors")
    with pytest.raises(TableNotFoundError) as e:
        lakehouse.open("zzz")
    assert "Did you mean" not in str(e.value)


def test_a_new_table_carries_the_descriptions_in_its_delta_schema(lakehouse):
    lakehouse.init()
    for name in TABLE_NAMES:
        dt = DeltaTable(lakehouse.table_uri(name), storage_options=lakehouse._opts)
        s = TABLES[name]
        assert _comments(dt) == {c.name: c.description for c in s.columns}, name
        assert dt.metadata().description == s.description
        assert lakehouse.write_descriptions(name) == 0  # nothing to bring up to date
        assert dt.version() == 0 and lakehouse.version(name) == 0
    # writes keep them; the data files themselves do not repeat them
    lakehouse.append("scores", {"book_id": ["b"], "metric": ["m"], "value": [1.0],
                                "scored_at": [NOW], "source_file": ["f"], "source_row": [1]},
                     lineage=Lineage(operation="test"))
    lakehouse.merge("scores", {"book_id": ["b"], "metric": ["m"], "value": [2.0],
                               "scored_at": [NOW], "source_file": ["f"], "source_row": [1]},
                    lineage=Lineage(operation="test"))
    dt = DeltaTable(lakehouse.table_uri("scores"), storage_options=lakehouse._opts)
    assert _comments(dt)["value"] == TABLES["scores"].doc("value")
    assert lakehouse.read("scores").column("value").to_pylist() == [2.0]
    if not lakehouse.config.is_s3:
        files = glob.glob(f"{lakehouse.table_uri('scores')}/*.parquet")
        assert files
        assert all(not f.metadata for path in files for f in pq.read_schema(path))


def test_an_older_table_gets_the_descriptions_written_into_it(lakehouse):
    """A table made before descriptions existed (plain fields, an older table description,
    a column declared since): opening it adds the column with its description, and
    write_descriptions brings the rest up to date, one commit per column, then none."""
    s = TABLES["flags"]
    old = pa.schema([pa.field(f.name, f.type, f.nullable) for f in s.schema
                     if f.name != "resolved_by"])
    DeltaTable.create(lakehouse.table_uri("flags"), old, name="flags", description="flags",
                      storage_options=lakehouse._opts)
    lakehouse.append("flags", {"flag_id": ["f1"], "scan_id": ["s1"], "flag": ["ok"],
                               "editor": ["ann"], "created_at": [NOW]},
                     lineage=Lineage(operation="test"))  # adds resolved_by, with its comment
    uri = lakehouse.table_uri("flags")
    got = _comments(DeltaTable(uri, storage_options=lakehouse._opts))
    assert got["resolved_by"] == s.doc("resolved_by")
    assert {v for k, v in got.items() if k != "resolved_by"} == {None}
    before = lakehouse.version("flags")

    commits = lakehouse.write_descriptions("flags")

    assert commits == len(s.schema) - 1 + 1  # every old column, and the table's description
    dt = DeltaTable(uri, storage_options=lakehouse._opts)
    assert dt.version() == before + commits
    assert _comments(dt) == {c.name: c.description for c in s.columns}
    assert dt.metadata().description == s.description
    assert {c.operation for c in lakehouse.history("flags", commits)} == {"describe"}
    assert lakehouse.read("flags").column("flag_id").to_pylist() == ["f1"]  # data untouched
    assert lakehouse.write_descriptions("flags") == 0
    assert lakehouse.version("flags") == before + commits
