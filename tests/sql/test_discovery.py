"""Discovering the catalog in SQL: SHOW TABLES, information_schema and friends see every table
and view without opening any table; the catalog's descriptions are DuckDB comments; a
misspelt table gets the catalog's closest name."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from catalog import TABLE_NAMES, TABLES, Lineage, QueryError
from sql import SqlSession

NOW = datetime(2026, 11, 22, tzinfo=UTC)
VIEWS = ["corpus_commits", "current_scores", "current_texts"]
LIN = Lineage(operation="test")


def _one_row(name: str) -> pa.Table:
    """A row of table ``name`` with every column set (lists too)."""
    def value(t: pa.DataType):
        if pa.types.is_list(t):
            return [value(t.value_type)]
        if pa.types.is_timestamp(t):
            return NOW
        if pa.types.is_floating(t):
            return 1.0
        if pa.types.is_integer(t):
            return 1
        return "x"

    schema = TABLES[name].data_schema
    return pa.Table.from_pylist([{f.name: value(f.type) for f in schema}], schema=schema)


def _scores(lh, values) -> int:
    return lh.append("scores", {
        "book_id": [f"b{i}" for i in range(len(values))], "metric": ["m"] * len(values),
        "value": values, "scored_at": [NOW] * len(values), "source_file": ["s.csv"] * len(values),
        "source_row": list(range(1, len(values) + 1)),
    }, lineage=LIN)


def _names(session: SqlSession, sql: str, column: int = 0) -> list[str]:
    return sorted(session.query(sql).column(column).to_pylist())


@pytest.mark.parametrize("sql, column", [
    ("SHOW TABLES", 0),
    ("SHOW ALL TABLES", 2),
    ("DESCRIBE", 2),
    ("PRAGMA show_tables", 0),
    ("SELECT table_name FROM information_schema.tables", 0),
    ("SELECT view_name FROM duckdb_views() WHERE NOT internal", 0),
    ("SELECT DISTINCT table_name FROM duckdb_columns() WHERE NOT internal", 0),
])
def test_discovery_statements_see_every_table_and_view_without_opening_one(lakehouse, sql,
                                                                           column):
    _scores(lakehouse, [1.0])
    lakehouse.append("texts", {"book_id": ["b0"], "variant": ["edited"], "text": ["t"]},
                     lineage=LIN)
    lakehouse.create("flags")  # an empty table is a table too
    with SqlSession(lakehouse) as s:
        assert _names(s, sql, column) == sorted(["scores", "texts", "flags", *VIEWS])
        assert s.versions == {}  # no table was opened: every one is a stub so far
        # naming a table replaces its stub with the real view, the others stay stubs
        assert s.query("SELECT sum(value) AS v FROM scores").column("v").to_pylist() == [1.0]
        assert s.query("SELECT count(*) AS n FROM current_texts").column("n").to_pylist() == [1]
        assert sorted(s.versions) == ["scores", "texts"]
        assert _names(s, sql, column) == sorted(["scores", "texts", "flags", *VIEWS])


def test_discovery_on_an_empty_lakehouse_shows_the_commits_view(lakehouse):
    with SqlSession(lakehouse) as s:
        assert _names(s, "SHOW TABLES") == ["corpus_commits"]
        assert s.query("SELECT count(*) AS n FROM corpus_commits").column("n").to_pylist() == [0]


@pytest.mark.parametrize("rows", [True, False], ids=["with rows", "empty"])
def test_a_stub_has_the_columns_and_types_of_the_real_view(lakehouse, rows):
    """What information_schema says of a table before a statement names it is what it says
    after: the same columns, DuckDB types and nullability (Parquet views when the table has
    files on a local root, Arrow datasets otherwise)."""
    for name in TABLE_NAMES:
        if rows:
            lakehouse.append(name, _one_row(name), lineage=LIN)
        else:
            lakehouse.create(name)
    cols = ("SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns ORDER BY table_name, ordinal_position")
    with SqlSession(lakehouse) as s:
        stubs = s.query(cols).to_pylist()
        assert s.versions == {}
    with SqlSession(lakehouse) as s:
        for name in [*TABLE_NAMES, *VIEWS]:  # every one registered for real
            s.query(f"SELECT count(*) FROM {name}")
        real = s.query(cols).to_pylist()
        assert sorted(s.versions) == sorted(TABLE_NAMES)
    assert {r["table_name"] for r in stubs} == {*TABLE_NAMES, *VIEWS}
    assert stubs == real


def test_columns_carry_the_catalog_descriptions_as_comments(lakehouse):
    _scores(lakehouse, [1.0])
    lakehouse.create("texts")
    with SqlSession(lakehouse) as s:
        got = s.query("SELECT table_name, column_name, COLUMN_COMMENT AS c FROM "
                      "information_schema.columns").to_pylist()
        comments = {(r["table_name"], r["column_name"]): r["c"] for r in got}
        for name in ("scores", "texts"):
            for c in TABLES[name].columns:
                assert comments[(name, c.name)] == c.description
        # a derived view's columns are its table's
        assert comments[("current_scores", "value")] == TABLES["scores"].doc("value")
        assert comments[("corpus_commits", "inputs")].startswith("JSON:")
        views = {r["view_name"]: r["comment"] for r in s.query(
            "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").to_pylist()}
        assert views["scores"] == TABLES["scores"].description
        assert views["current_texts"].startswith("each book's best text")
        # a stub replaced by its real view (a statement names it) keeps its comments
        got = s.query("SELECT column_name, comment FROM duckdb_columns() "
                      "WHERE table_name = 'texts'").to_pylist()
        assert "texts" in s.versions
        assert {r["column_name"]: r["comment"] for r in got} == {
            c.name: c.description for c in TABLES["texts"].columns}


def test_pinned_versions_still_apply_after_discovery(lakehouse):
    v1 = _scores(lakehouse, [1.0, 2.0])
    _scores(lakehouse, [10.0])
    with SqlSession(lakehouse, as_of={"scores": v1}) as s:
        assert "scores" in _names(s, "SHOW TABLES")
        assert s.versions == {"scores": v1}
        assert s.query("SELECT sum(value) AS t FROM scores").column("t").to_pylist() == [3.0]
        got = s.query("SELECT count(*) AS n FROM current_scores").column("n").to_pylist()
        assert got == [2]
    with SqlSession(lakehouse) as s:
        s.query("SELECT * FROM information_schema.columns")
        assert s.query("SELECT sum(value) AS t FROM scores").column("t").to_pylist() == [13.0]


def test_a_stub_is_never_read_as_an_empty_table(lakehouse):
    """A statement that reaches a table without naming it (a computed name) fails instead of
    reading the stub's no rows."""
    _scores(lakehouse, [1.0])
    with SqlSession(lakehouse) as s:
        s.query("SHOW TABLES")
        with pytest.raises(QueryError, match="registered when a statement names it"):
            s.query("SELECT count(*) FROM query_table('sc' || 'ores')")
        # named, it is the real table
        assert s.query("SELECT count(*) AS n FROM query_table('scores')").column(
            "n").to_pylist() == [1]


@pytest.mark.parametrize("typo, want", [("scors", "scores"), ("current_score", "current_scores"),
                                        ("corpus_comits", "corpus_commits"),
                                        ("predictons", "predictions")])
def test_a_misspelt_table_suggests_the_catalog_first(lakehouse, typo, want):
    _scores(lakehouse, [1.0])
    with SqlSession(lakehouse) as s, pytest.raises(QueryError) as e:
        s.query(f"SELECT * FROM {typo}")
    msg = str(e.value)
    assert f'Did you mean "{want}"?' in msg
    assert msg.count("Did you mean") == 1 and "duckdb_" not in msg
    assert "Catalog tables here: scores" in msg


def test_a_name_near_no_catalog_table_keeps_duckdbs_suggestion(lakehouse):
    with SqlSession(lakehouse) as s, pytest.raises(QueryError) as e:
        s.query("SELECT * FROM duckdb_tabless")
    assert 'Did you mean "duckdb_tables' in str(e.value)
