"""Data files that workers write and the driver commits at once (catalog/datafiles.py and
Lakehouse.commit_files), on a local folder and on S3: one commit with lineage, replaced
keys, statistics readers use, orphans of a job that never committed removed by vacuum."""

from __future__ import annotations

import json

from catalog import Lineage
from catalog.datafiles import file_stats, write_data_file
from sql import SqlSession


def _text(book: str, variant: str, text: str) -> dict:
    return {"book_id": book, "variant": variant, "text": text, "n_chars": len(text)}


def test_worker_files_are_one_commit_with_lineage_and_replace_their_keys(lakehouse):
    lakehouse.append("texts", [_text("b1", "edited", "one"), _text("b1", "noisy/a", "old"),
                               _text("b2", "edited", "two")], lineage=Lineage(operation="t"))
    before = lakehouse.version("texts")
    # two workers' files, not visible until the driver commits them
    f1 = write_data_file(lakehouse.config, "texts", [_text("b1", "noisy/a", "new")])
    f2 = write_data_file(lakehouse.config, "texts", [_text("b2", "noisy/a", "new 2")])
    assert lakehouse.version("texts") == before and lakehouse.read("texts").num_rows == 3
    lineage = Lineage(operation="noise", inputs={"texts": before},
                      config={"failed": 1, "failures": {"b3": "TypeError: bad"}})
    v = lakehouse.commit_files("texts", [f1, f2], lineage=lineage,
                               replace=[("b1", "noisy/a"), ("b2", "noisy/a")])
    assert v == before + 1
    rows = sorted((r["book_id"], r["variant"], r["text"])
                  for r in lakehouse.read("texts").to_pylist())
    # b1's old noisy row shared a file with edited rows: that file was rewritten without it
    assert rows == [("b1", "edited", "one"), ("b1", "noisy/a", "new"),
                    ("b2", "edited", "two"), ("b2", "noisy/a", "new 2")]
    commit = lakehouse.history("texts", limit=1)[0]
    assert commit.operation == "noise" and commit.inputs == {"texts": before}
    assert commit.config["failed"] == 1 and commit.config["failures"] == {"b3": "TypeError: bad"}
    # DuckDB (corpus sql) reads the committed files, statistics and all, like any others
    with SqlSession(lakehouse) as s:
        got = s.query("SELECT text FROM texts WHERE variant = 'noisy/a' ORDER BY book_id")
    assert got.column("text").to_pylist() == ["new", "new 2"]


def test_files_of_a_job_that_never_committed_are_vacuumed(lakehouse):
    lakehouse.append("texts", [_text("b1", "edited", "one")], lineage=Lineage(operation="t"))
    write_data_file(lakehouse.config, "texts", [_text("b1", "noisy/x", "orphan")])
    assert lakehouse.read("texts").num_rows == 1
    orphans = lakehouse.vacuum("texts", retention_hours=0, dry_run=True)
    assert len(orphans) == 1 and orphans[0].endswith(".parquet")
    assert lakehouse.vacuum("texts", retention_hours=0, dry_run=False) == orphans
    assert lakehouse.vacuum("texts", retention_hours=0, dry_run=True) == []
    assert lakehouse.read("texts").num_rows == 1


def test_statistics_skip_long_strings_and_lists():
    import pyarrow as pa

    t = pa.table({"book_id": ["b2", "b1"], "text": ["x" * 40, "y"], "n": [3, None],
                  "offsets": pa.array([[1], None], pa.list_(pa.int64()))})
    stats = json.loads(file_stats(t))
    assert stats["numRecords"] == 2
    assert stats["minValues"] == {"book_id": "b1", "n": 3}
    assert stats["maxValues"] == {"book_id": "b2", "n": 3}
    assert stats["nullCount"] == {"book_id": 0, "text": 0, "n": 1}
