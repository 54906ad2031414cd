"""DuckDB over the catalog: views, pinned versions, the read-only guard, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from catalog import Lineage, QueryError, TableNotFoundError, VersionNotFoundError
from sql import SqlSession, parse_as_of

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _scores(lh, values):
    return lh.append("scores", {
        "book_id": [f"b{i}" for i in range(len(values))], "metric": ["bt_easiness"] * len(values),
        "value": values, "scored_at": [NOW] * len(values), "source_file": ["s.csv"] * len(values),
        "source_row": list(range(1, len(values) + 1)),
    }, lineage=Lineage(operation="test"))


def test_views_and_pinned_versions(lakehouse):
    v1 = _scores(lakehouse, [1.0, 2.0])
    _scores(lakehouse, [10.0])
    with SqlSession(lakehouse) as s:
        assert s.query("SELECT sum(value) AS t FROM scores").column("t").to_pylist() == [13.0]
        assert s.versions["scores"] == 2
        # filter pushdown path: a predicate on the view still gives the right rows
        got = s.query("SELECT book_id FROM scores WHERE value > 1.5 ORDER BY value")
        assert got.column("book_id").to_pylist() == ["b1", "b0"]
    with SqlSession(lakehouse, as_of={"scores": v1}) as s:
        assert s.query("SELECT sum(value) AS t FROM scores").column("t").to_pylist() == [3.0]


def test_commits_view_is_lineage_as_a_query(lakehouse):
    _scores(lakehouse, [1.0])
    lakehouse.append("alignments", {"book_id": ["b0"], "raw_variant": ["ocr"]},
                     lineage=Lineage(operation="mine", inputs=lakehouse.pin("scores")))
    with SqlSession(lakehouse) as s:
        t = s.query("SELECT table_name, version, operation, inputs FROM corpus_commits "
                    "WHERE operation = 'mine'")
    assert t.to_pylist() == [
        {"table_name": "alignments", "version": 1, "operation": "mine",
         "inputs": '{"scores": 1}'}]


@pytest.mark.parametrize("query", [
    "COPY scores TO '{tmp}/out.csv'",
    "SELECT * FROM read_csv('{tmp}/in.csv')",
    "INSERT INTO scores SELECT * FROM scores",
    "DELETE FROM scores",
    "ATTACH '{tmp}/x.duckdb' AS x",
    "SET enable_external_access = true",
    "CREATE TABLE x AS SELECT 1",
    "SELECT 1; DROP VIEW scores",
    "INSTALL httpfs",
])
def test_read_only_guard(lakehouse, tmp_path, query):
    _scores(lakehouse, [1.0])
    (tmp_path / "in.csv").write_text("a\n1\n")
    with SqlSession(lakehouse) as s, pytest.raises(QueryError, match=r"read-only|not allowed"):
        s.query(query.format(tmp=tmp_path))
    assert not (tmp_path / "out.csv").exists()
    assert lakehouse.version("scores") == 1
    assert lakehouse.read("scores").num_rows == 1


def test_allow_files_reads_and_writes_local_files(lakehouse, tmp_path):
    _scores(lakehouse, [1.0, 2.0])
    (tmp_path / "in.csv").write_text("book_id,bonus\nb1,5\n")
    with SqlSession(lakehouse, allow_files=True) as s:
        t = s.query(f"SELECT s.value + c.bonus AS v FROM scores s "
                    f"JOIN read_csv('{tmp_path}/in.csv') c USING (book_id)")
        assert t.column("v").to_pylist() == [7.0]
        s.query(f"COPY (SELECT book_id FROM scores) TO '{tmp_path}/out.csv'")
        # the statement checks stay on: still no way to change a lakehouse table
        with pytest.raises(QueryError, match=r"INSERT statements are not allowed"):
            s.query("INSERT INTO scores SELECT * FROM scores")
    assert (tmp_path / "out.csv").read_text().splitlines() == ["book_id", "b0", "b1"]
    assert lakehouse.read("scores").num_rows == 2


def test_errors_are_clear(lakehouse):
    _scores(lakehouse, [1.0])
    with SqlSession(lakehouse) as s:
        with pytest.raises(QueryError, match=r"(?s)nope.*Catalog tables here: scores"):
            s.query("SELECT * FROM nope")
        with pytest.raises(QueryError, match="Bad SQL"):
            s.query("SELEC 1")
        with pytest.raises(QueryError, match="empty"):
            s.query("  ")
    with pytest.raises(TableNotFoundError, match="Known tables"):
        SqlSession(lakehouse, as_of={"nope": 1})
    with pytest.raises(TableNotFoundError, match="do not exist"):
        SqlSession(lakehouse, as_of={"texts": 0})
    with pytest.raises(VersionNotFoundError, match=r"versions are 0\.\.1"):
        SqlSession(lakehouse, as_of={"scores": 5})


def test_parse_as_of():
    assert parse_as_of(["texts=3"]) == {"texts": 3}
    assert parse_as_of(["texts=2026-11-22T08:00:00"])["texts"].tzinfo is not None
    with pytest.raises(VersionNotFoundError, match="TABLE=VERSION"):
        parse_as_of(["texts"])


def test_current_scores_and_texts_views_follow_the_catalog_rules(lakehouse):
    """The views give what catalog.rules gives, and follow the table's pin."""
    from catalog.rules import current_scores

    v1 = lakehouse.append("scores", {
        "book_id": ["b0", "b0"], "metric": ["m", "m"], "value": [1.0, 2.0],
        "scored_at": [NOW, NOW], "source_file": ["a.csv", "b.csv"], "source_row": [1, 1],
    }, lineage=Lineage(operation="test"))
    lakehouse.append("scores", {
        "book_id": ["b0"], "metric": ["m"], "value": [9.0],
        "scored_at": [NOW.replace(day=23)], "source_file": ["a.csv"], "source_row": [2],
    }, lineage=Lineage(operation="test"))
    lakehouse.append("texts", {
        "book_id": ["b0", "b0", "b1", "b1", "b2"],
        "variant": ["ocr", "edited", "ocr", "corrected", "noisy/mined-v1/0"],
        "text": ["o", "e", "o1", "c1", "n2"]}, lineage=Lineage(operation="test"))
    with SqlSession(lakehouse) as s:
        got = s.query("SELECT book_id, value FROM current_scores").to_pylist()
        want = current_scores(lakehouse.read("scores")).select(["book_id", "value"])
        assert got == want.to_pylist() == [{"book_id": "b0", "value": 9.0}]
        texts = s.query("SELECT book_id, variant FROM current_texts ORDER BY book_id")
        assert texts.to_pylist() == [{"book_id": "b0", "variant": "edited"},
                                     {"book_id": "b1", "variant": "corrected"}]
    with SqlSession(lakehouse, as_of={"scores": v1}) as s:
        got = s.query("SELECT value FROM current_scores").column("value").to_pylist()
        assert got == [2.0]
