"""Every Delta table operation, on a local folder and on a real S3 server."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from catalog import (
    TABLES,
    Lakehouse,
    Lineage,
    SchemaError,
    TableNotFoundError,
    VersionNotFoundError,
)
from catalog.lineage import META_KEY

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def flags(ids, flag="ok", editor="ann"):
    return pa.table({
        "flag_id": [str(i) for i in ids],
        "scan_id": [f"scan-{i}" for i in ids],
        "flag": [flag] * len(ids),
        "editor": [editor] * len(ids),
        "created_at": pa.array([NOW] * len(ids), pa.timestamp("us", tz="UTC")),
    })


def rows(lh: Lakehouse, name: str, version=None) -> dict[str, dict]:
    t = lh.read(name, version=version)
    key = TABLES[name].keys[0]
    return {r[key]: r for r in t.to_pylist()}


LIN = Lineage(operation="test", config={"k": 1})


def test_init_creates_every_declared_table(lakehouse):
    assert lakehouse.list_tables() == []
    created = lakehouse.init()
    assert created == list(TABLES)
    assert lakehouse.list_tables() == list(TABLES)
    assert lakehouse.init() == []  # idempotent
    for name in TABLES:
        dt = lakehouse.open(name)
        assert dt.version() == 0
        assert [f.name for f in TABLES[name].schema] == lakehouse.read(name).column_names


def test_unknown_and_missing_tables_give_clear_errors(lakehouse):
    with pytest.raises(TableNotFoundError, match="Known tables: files"):
        lakehouse.open("nope")
    with pytest.raises(TableNotFoundError, match="does not exist yet"):
        lakehouse.open("flags")


def test_append_read_and_schema_checks(lakehouse):
    v = lakehouse.append("flags", flags([1, 2]), lineage=LIN)
    assert v == 1  # version 0 is the create commit
    got = rows(lakehouse, "flags")
    assert set(got) == {"1", "2"} and got["1"]["note"] is None  # nullable column null-filled
    with pytest.raises(SchemaError, match="has no columns"):
        lakehouse.append("flags", flags([3]).append_column("bogus", pa.array([1])), lineage=LIN)
    with pytest.raises(SchemaError, match="needs column 'editor'"):
        lakehouse.append("flags", flags([3]).drop_columns(["editor"]), lineage=LIN)
    bad = flags([3]).set_column(3, "editor", pa.array([None], pa.string()))
    with pytest.raises(SchemaError, match="required but 1 of 1 rows are null"):
        lakehouse.append("flags", bad, lineage=LIN)
    with pytest.raises(SchemaError, match="cannot convert"):
        lakehouse.append("scores", {"book_id": ["b"], "metric": ["m"], "value": ["high"],
                                    "scored_at": [NOW], "source_file": ["f"]}, lineage=LIN)
    assert lakehouse.version("flags") == 1  # nothing written by the failed appends


def test_append_accepts_polars_and_pylist(lakehouse):
    import polars as pl

    lakehouse.append("flags", pl.from_arrow(flags([1])), lineage=LIN)
    lakehouse.append("flags", flags([2]).to_pylist(), lineage=LIN)
    assert set(rows(lakehouse, "flags")) == {"1", "2"}


def test_overwrite_whole_and_by_predicate(lakehouse):
    lakehouse.append("flags", flags([1, 2, 3], editor="ann"), lineage=LIN)
    lakehouse.overwrite("flags", flags([9], editor="bob"), lineage=LIN)
    assert set(rows(lakehouse, "flags")) == {"9"}
    lakehouse.append("flags", flags([1, 2], editor="ann"), lineage=LIN)
    lakehouse.overwrite("flags", flags([7], editor="ann"), predicate="editor = 'ann'",
                        lineage=LIN)
    assert set(rows(lakehouse, "flags")) == {"9", "7"}


def test_merge_upserts_by_key(lakehouse):
    lakehouse.append("flags", flags([1, 2], flag="ok"), lineage=LIN)
    m = lakehouse.merge("flags", flags([2, 3], flag="rescan"), lineage=LIN)
    assert m["num_target_rows_updated"] == 1 and m["num_target_rows_inserted"] == 1
    got = rows(lakehouse, "flags")
    assert {k: r["flag"] for k, r in got.items()} == {"1": "ok", "2": "rescan", "3": "rescan"}
    with pytest.raises(SchemaError, match="more than once"):
        lakehouse.merge("flags", flags([4, 4]), lineage=LIN)
    lakehouse.merge("flags", flags([3]), lineage=LIN, delete_missing=True)
    assert set(rows(lakehouse, "flags")) == {"3"}


def test_upsert_appends_first_then_merges(lakehouse):
    with pytest.raises(SchemaError, match="more than once"):
        lakehouse.upsert("flags", flags([1, 1]), lineage=LIN)
    assert not lakehouse.exists("flags")
    v1 = lakehouse.upsert("flags", flags([1, 2]), lineage=LIN)
    assert lakehouse.history("flags", 1)[0].delta_operation == "WRITE"
    v2 = lakehouse.upsert("flags", flags([2, 3], flag="rescan"), lineage=LIN)
    assert v2 == v1 + 1 and lakehouse.version("flags") == v2
    got = rows(lakehouse, "flags")
    assert {k: r["flag"] for k, r in got.items()} == {"1": "ok", "2": "rescan", "3": "rescan"}
    # by another key: a row of the same scan replaces the scan's row
    lakehouse.upsert("flags", flags([9], flag="needs_edit").set_column(
        1, "scan_id", pa.array(["scan-1"])), lineage=LIN, on=("scan_id",))
    assert {k: r["flag"] for k, r in rows(lakehouse, "flags").items()} == {
        "9": "needs_edit", "2": "rescan", "3": "rescan"}


# keys a share really has: quotes, a backslash, a newline, SQL wildcards, non-ASCII
AWKWARD = ["O'Brien's \"Copy\".docx", "a\\b", "two\nlines", "50% off_", "Ünïcødé ✓", "x"]


@pytest.mark.parametrize("many", [False, True], ids=["listed-keys", "merge"])
def test_upsert_and_sync_replace_exactly_their_keys(lakehouse, monkeypatch, many):
    """A few keys are replaced by an overwrite whose predicate lists them; many keys by a
    merge. Both give the same rows: the listed keys' rows replaced or deleted, none other
    touched, whatever the characters of a key."""
    import catalog.tables

    if many:  # every write above the limit: the merge path
        monkeypatch.setattr(catalog.tables, "REPLACE_MAX_KEYS", 0)
    ids = [*AWKWARD, *[f"{k}-2" for k in AWKWARD]]
    lakehouse.append("flags", flags(ids), lineage=LIN)
    v = lakehouse.upsert("flags", flags([*AWKWARD[:3], "new'one"], flag="rescan"), lineage=LIN)
    assert lakehouse.history("flags", 1)[0].delta_operation == ("MERGE" if many else "WRITE")
    want = {i: "ok" for i in ids} | {i: "rescan" for i in [*AWKWARD[:3], "new'one"]}
    assert {k: r["flag"] for k, r in rows(lakehouse, "flags").items()} == want
    assert lakehouse.seen_version("flags") == v == lakehouse.version("flags")
    # upserts and deletions in one commit
    m = lakehouse.sync("flags", flags([AWKWARD[3]], flag="needs_edit"), lineage=LIN,
                       delete_keys=[{"flag_id": AWKWARD[4]}, {"flag_id": "two\nlines-2"}])
    assert m["version"] == v + 1 == lakehouse.version("flags")
    del want[AWKWARD[4]], want["two\nlines-2"]
    want[AWKWARD[3]] = "needs_edit"
    assert {k: r["flag"] for k, r in rows(lakehouse, "flags").items()} == want
    # a composite key (texts: book and variant): only that variant of those books
    text = {"variant": "edited", "text": "t", "n_chars": 1}
    lakehouse.append("texts", [{"book_id": b, **text, "variant": var}
                               for b in AWKWARD[:2] for var in ("edited", "ocr")], lineage=LIN)
    lakehouse.sync("texts", [{"book_id": AWKWARD[0], **text, "text": "new"}], lineage=LIN,
                   delete_keys=[{"book_id": AWKWARD[1], "variant": "edited"}])
    got = {(r["book_id"], r["variant"]): r["text"] for r in lakehouse.read("texts").to_pylist()}
    assert got == {(AWKWARD[0], "edited"): "new", (AWKWARD[0], "ocr"): "t",
                   (AWKWARD[1], "ocr"): "t"}


def test_merge_of_owned_columns_keeps_the_others(lakehouse):
    lakehouse.append("flags", flags([1, 2], flag="ok"), lineage=LIN)
    src = flags([1, 2, 3], flag="rescan", editor="bob")
    m = lakehouse.merge("flags", src, lineage=LIN, columns=["editor"], insert=False)
    assert m["num_target_rows_updated"] == 2 and m["num_target_rows_inserted"] == 0
    got = rows(lakehouse, "flags")
    assert {k: (r["flag"], r["editor"]) for k, r in got.items()} == {
        "1": ("ok", "bob"), "2": ("ok", "bob")}
    # an SQL expression over the table's row (t) and the source row (s)
    lakehouse.merge("flags", flags([1, 2], flag="rescan"), lineage=LIN, columns={
        "flag": "CASE WHEN t.flag_id = '1' THEN t.flag ELSE s.flag END"})
    assert {k: r["flag"] for k, r in rows(lakehouse, "flags").items()} == {
        "1": "ok", "2": "rescan"}
    with pytest.raises(SchemaError, match="no column"):
        lakehouse.merge("flags", flags([1]), lineage=LIN, columns=["nope"])


def test_merge_on_composite_key(lakehouse):
    def texts(variant, text):
        return {"book_id": ["b1"], "variant": [variant], "text": [text]}

    lakehouse.merge("texts", texts("edited", "one"), lineage=LIN)
    lakehouse.merge("texts", texts("ocr", "0ne"), lineage=LIN)
    lakehouse.merge("texts", texts("edited", "One."), lineage=LIN)
    got = {r["variant"]: r["text"] for r in lakehouse.read("texts").to_pylist()}
    assert got == {"edited": "One.", "ocr": "0ne"}


def test_delete(lakehouse):
    lakehouse.append("flags", flags([1, 2, 3]), lineage=LIN)
    m = lakehouse.delete("flags", "flag_id IN ('1', '3')", lineage=LIN)
    assert m["num_deleted_rows"] == 2
    assert set(rows(lakehouse, "flags")) == {"2"}


def test_history_records_lineage(lakehouse):
    lakehouse.append("flags", flags([1]), lineage=Lineage(
        operation="flag", inputs={"scans": 4}, sources=["/share/x.pdf"], config={"a": [1, 2]}))
    commits = lakehouse.history("flags")
    assert [c.version for c in commits] == [1, 0]
    c = commits[0]
    assert (c.operation, c.inputs, c.sources, c.config) == (
        "flag", {"scans": 4}, ["/share/x.pdf"], {"a": [1, 2]})
    assert c.code_version and c.code_version.startswith("0.")
    assert c.metrics["num_added_rows"] == 1
    # The record is plain JSON in the Delta log, readable by any Delta client.
    raw = lakehouse.open("flags").history(1)[0][META_KEY]
    assert json.loads(raw)["operation"] == "flag"
    assert len(lakehouse.history("flags", limit=1)) == 1


def test_time_travel_by_version_and_timestamp(lakehouse):
    lakehouse.append("flags", flags([1]), lineage=LIN)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    lakehouse.append("flags", flags([2]), lineage=LIN)
    assert set(rows(lakehouse, "flags", version=1)) == {"1"}
    assert set(rows(lakehouse, "flags", version=2)) == {"1", "2"}
    assert set(rows(lakehouse, "flags", version=between)) == {"1"}
    assert set(rows(lakehouse, "flags", version=between.isoformat())) == {"1"}
    with pytest.raises(VersionNotFoundError, match=r"versions are 0\.\.2"):
        lakehouse.open("flags", 7)
    with pytest.raises(VersionNotFoundError, match="did not exist yet"):
        lakehouse.open("flags", between - timedelta(days=1))
    with pytest.raises(VersionNotFoundError, match="neither a table version"):
        lakehouse.open("flags", "yesterday")


def test_stats_optimize_vacuum(lakehouse):
    for i in range(4):
        lakehouse.append("flags", flags([i]), lineage=LIN)
    s = lakehouse.stats("flags")
    assert (s.version, s.rows, s.files) == (4, 4, 4) and s.bytes > 0
    m = lakehouse.optimize("flags")
    assert m["numFilesRemoved"] == 4 and m["numFilesAdded"] == 1
    s2 = lakehouse.stats("flags")
    assert (s2.version, s2.rows, s2.files) == (5, 4, 1)
    assert lakehouse.history("flags", limit=1)[0].operation == "optimize"
    assert lakehouse.read("flags").sort_by("flag_id").equals(
        lakehouse.read("flags", version=4).sort_by("flag_id"))
    # The 4 small files are now unreferenced: vacuum lists them, then deletes them.
    listed = lakehouse.vacuum("flags", retention_hours=0, dry_run=True)
    assert len(listed) == 4
    assert len(lakehouse.open("flags").file_uris()) == 1
    deleted = lakehouse.vacuum("flags", retention_hours=0, dry_run=False)
    assert sorted(deleted) == sorted(listed)
    with pytest.raises(Exception, match=r"(?i)not found|no such file|404"):
        lakehouse.read("flags", version=4)  # its files are gone now
    assert pc.sum(lakehouse.read("flags").column("flag_id").cast(pa.int64())).as_py() == 6


def test_string_filters_work_on_files_written_by_append_and_merge(lakehouse):
    # delta-rs writes string columns as string_view in some write paths and as string in
    # others; filters must work over a table holding both kinds of file.
    lakehouse.append("flags", flags([1], editor="ann"), lineage=LIN)
    lakehouse.merge("flags", flags([2], editor="bob"), lineage=LIN)
    got = lakehouse.read("flags", filter=pc.field("editor") == "bob")
    assert got.column("flag_id").to_pylist() == ["2"]
    assert got.schema.field("editor").type == pa.string()  # declared types come back
    from sql import SqlSession

    with SqlSession(lakehouse) as s:
        for where, want in [("editor = 'ann'", ["1"]), ("editor >= 'b'", ["2"]),
                            ("editor IN ('ann', 'x')", ["1"]), ("editor LIKE '%o%'", ["2"])]:
            t = s.query(f"SELECT flag_id FROM flags WHERE {where} ORDER BY 1")
            assert t.column("flag_id").to_pylist() == want, where


def test_an_older_predictions_table_gets_the_window_columns_on_first_open(tmp_path):
    from deltalake import write_deltalake

    lh = Lakehouse(str(tmp_path / "lh"))
    declared = TABLES["predictions"].schema
    old = pa.schema([f for f in declared if f.name not in ("n_windows", "window_sd")])
    write_deltalake(lh.table_uri("predictions"), pa.Table.from_pylist(
        [{"run_id": "r", "book_id": "b1", "variant": "ocr", "prediction": 1.0}], schema=old))
    again = Lakehouse(lh.root)  # a newer Corpus opening a lakehouse written by an older one
    again.append("predictions", [{"run_id": "r", "book_id": "b2", "variant": "ocr",
                                  "prediction": 2.0, "n_windows": 3, "window_sd": 0.5}],
                 lineage=Lineage(operation="test"))
    rows = {r["book_id"]: r for r in again.read("predictions").to_pylist()}
    assert (rows["b1"]["n_windows"], rows["b1"]["window_sd"]) == (None, None)
    assert (rows["b2"]["n_windows"], rows["b2"]["window_sd"]) == (3, 0.5)
    assert any(c.operation == "add_columns" for c in again.history("predictions"))
