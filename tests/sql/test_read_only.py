"""`corpus sql` is read-only for real: every known way DuckDB has to write is refused, with and
without --allow-files, and the tables read the same afterwards."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from catalog import Lakehouse, LakehouseConfig, Lineage, QueryError
from sql import SqlSession

NOW = datetime(2026, 11, 22, tzinfo=UTC)
# What the refusals say: the guard's messages, or DuckDB's locked configuration.
REFUSED = r"not allowed|read-only|inside the lakehouse|holding the lakehouse|plain|separator|locked"


@pytest.fixture
def lh(tmp_path) -> Lakehouse:
    """A local lakehouse (only a local folder can be reached by DuckDB's file writers) with
    two tables."""
    lh = Lakehouse(LakehouseConfig(root=str(tmp_path / "lakehouse")))
    lh.append("scores", {
        "book_id": ["b0", "b1"], "metric": ["bt_easiness"] * 2, "value": [1.0, 2.0],
        "scored_at": [NOW] * 2, "source_file": ["s.csv"] * 2, "source_row": [1, 2],
    }, lineage=Lineage(operation="test"))
    lh.append("books", {"book_id": ["b0"], "title": ["T"], "sources": [["a", "b"]]},
              lineage=Lineage(operation="test"))
    return lh


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _part(lh: Lakehouse) -> str:
    return next(Path(lh.root, "tables", "books").glob("part-*.parquet")).as_posix()


# Each bypass: a statement that would write under the lakehouse root (or change the session so
# that a later statement could). {part} is a data file of `books`, {books} its folder,
# {root} the lakehouse, {tmp} a folder outside it.
BYPASSES = {
    "copy over a data file": "COPY (SELECT 1 AS a) TO '{part}' (FORMAT parquet)",
    "copy into a table folder": "COPY scores TO '{books}/extra.parquet' (FORMAT parquet)",
    "copy via ..": "COPY scores TO '{tmp}/../{rootname}/tables/books/x.csv'",
    "copy via a symlink": "COPY scores TO '{tmp}/link/tables/books/x.csv'",
    "copy to the root itself": "COPY scores TO '{root}' (FORMAT csv, PARTITION_BY (metric))",
    "copy over the root's parent": "COPY scores TO '{tmp}' (FORMAT csv, PARTITION_BY (metric), "
                                   "OVERWRITE)",
    "copy with file_extension climbing out": "COPY scores TO '{tmp}/p' (FORMAT csv, "
        "PARTITION_BY (metric), FILE_EXTENSION 'x/../../{rootname}/tables/books/e')",
    "copy with filename_pattern climbing out": "COPY scores TO '{tmp}/p' (FORMAT csv, "
        "PARTITION_BY (metric), FILENAME_PATTERN '../../{rootname}/tables/books/f{{i}}')",
    "copy to an expression": "COPY scores TO ('{books}' || '/y.csv')",
    "copy to an escape string": "COPY scores TO E'{books}/y.csv'",
    "copy to a dollar string": "COPY scores TO $${books}/y.csv$$",
    "copy to a file: url": "COPY scores TO 'file://{books}/y.csv'",
    "copy to stdout": "COPY scores TO STDOUT",
    "copy from a file": "COPY scores FROM '{tmp}/in.csv'",
    "copy hidden behind a comment and a select": "/* COPY is fine */ SELECT 1; "
                                                 "COPY (SELECT 1) TO '{part}'",
    "copy after a string with a semicolon": "SELECT ';' AS x; COPY (SELECT 1) TO '{part}'",
    "explain analyze create": "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
    "explain analyze drop view": "EXPLAIN ANALYZE DROP VIEW scores",
    "explain (analyze) drop view": "EXPLAIN (ANALYZE) DROP VIEW scores",
    "explain analyze with comments": "EXPLAIN /* x */ ANALYZE -- y\n DROP VIEW scores",
    "explain analyze copy": "EXPLAIN ANALYZE COPY (SELECT 1) TO '{part}'",
    "export database": "EXPORT DATABASE '{books}'",
    "import database": "IMPORT DATABASE '{tmp}/evil'",
    "pragma import_database": "PRAGMA import_database('{tmp}/evil')",
    "copy from database": "COPY FROM DATABASE memory TO other",
    "attach": "ATTACH '{books}/x.duckdb' AS x",
    "create table as": "CREATE TABLE x AS SELECT 1",
    "create view": "CREATE OR REPLACE VIEW scores AS SELECT 1 AS value",
    "drop view": "DROP VIEW scores",
    "insert": "INSERT INTO scores SELECT * FROM scores",
    "delete": "DELETE FROM scores",
    "install": "INSTALL httpfs",
    "load": "LOAD parquet",
    "update extensions": "UPDATE EXTENSIONS",
    "set": "SET enable_external_access = true",
    "pragma set": "PRAGMA profiling_output = '{books}/profile.json'",
    "reset": "RESET lock_configuration",
    "enable profiling to a file": "SELECT * FROM enable_profiling(format = 'json', "
                                  "save_location = '{books}/p.json')",
    "enable logging to a file": "SELECT * FROM enable_logging(storage = 'file', "
                                "storage_path = '{books}')",
    "call": "CALL enable_logging(storage = 'file', storage_path = '{books}')",
    "pragma force_checkpoint": "PRAGMA force_checkpoint",
    "checkpoint": "CHECKPOINT",
    "prepare": "PREPARE p AS SELECT 1",
    "transaction": "BEGIN TRANSACTION",
}


@pytest.mark.parametrize("allow_files", [False, True], ids=["default", "allow-files"])
@pytest.mark.parametrize("sql", BYPASSES.values(), ids=BYPASSES.keys())
def test_bypass_is_refused_and_tables_stay_readable(lh, tmp_path, sql, allow_files):
    outside = tmp_path / "outside"
    (outside / "evil").mkdir(parents=True)
    (outside / "evil" / "schema.sql").write_text(f"COPY (SELECT 1) TO '{_part(lh)}';\n")
    (outside / "evil" / "load.sql").write_text("")
    (outside / "in.csv").write_text("book_id\nb9\n")
    (outside / "link").symlink_to(lh.root)
    root = Path(lh.root)
    # the root's parent is `tmp_path`; a COPY with OVERWRITE there would wipe the lakehouse
    query = sql.format(part=_part(lh), books=root / "tables" / "books", root=root,
                       rootname=root.name, tmp=outside if "OVERWRITE" not in sql else tmp_path)
    before = _snapshot(root)
    with SqlSession(lh, allow_files=allow_files) as s:
        with pytest.raises(QueryError, match=REFUSED):
            s.query(query)
        # the same session still reads both tables, unchanged
        assert s.query("SELECT count(*) AS n FROM scores").column("n").to_pylist() == [2]
        assert s.query("SELECT sources FROM books").column("sources").to_pylist() == [["a", "b"]]
    assert _snapshot(root) == before
    assert lh.read("books").num_rows == 1 and lh.read("scores").num_rows == 2


def test_allow_files_still_copies_outside_the_lakehouse(lh, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with SqlSession(lh, allow_files=True) as s:
        s.query(f"COPY (SELECT book_id FROM scores ORDER BY 1) TO '{out}/ids.csv'")
        s.query(f"COPY (SELECT DATE '2026-11-22' AS d) TO '{out}/d.csv' (DATEFORMAT '%d/%m/%Y')")
        s.query(f"COPY scores TO '{out}/parts' (FORMAT parquet, PARTITION_BY (metric))")
    assert (out / "ids.csv").read_text().splitlines() == ["book_id", "b0", "b1"]
    assert (out / "d.csv").read_text().splitlines() == ["d", "22/11/2026"]
    assert list((out / "parts").glob("metric=bt_easiness/*.parquet"))


@pytest.mark.parametrize("sql", [
    "EXPLAIN SELECT * FROM scores",
    "EXPLAIN ANALYZE SELECT count(*) FROM scores",
    "EXPLAIN /* c */ ANALYZE -- c\n SELECT 1",
    "EXPLAIN (FORMAT json) SELECT 1",
    "EXPLAIN (SELECT 1)",
    "PRAGMA version",
    "PRAGMA table_info('scores')",
    "DESCRIBE scores",
    "SUMMARIZE scores",
    "SELECT 1; SELECT 2",
])
def test_reads_still_run(lh, sql):
    with SqlSession(lh) as s:
        assert s.query(sql).num_rows >= 1
