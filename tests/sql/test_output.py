"""Result writers: nested values in CSV, --out paths, tables that are not folded when piped."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pytest

from catalog import CorpusError
from sql.output import write_result


def _reader(table: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def test_csv_writes_nested_values_as_json():
    t = pa.table({
        "id": ["a", "b"],
        "sources": pa.array([["x/1.docx", "y"], None], pa.list_(pa.string())),
        "meta": pa.array([{"n": 1, "tags": ["t"]}, {"n": None, "tags": []}]),
    })
    out = io.StringIO()
    assert write_result(_reader(t), fmt="csv", stream=out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["id", "sources", "meta"]
    assert json.loads(rows[1][1]) == ["x/1.docx", "y"] and rows[2][1] == ""
    assert json.loads(rows[1][2]) == {"n": 1, "tags": ["t"]}
    assert json.loads(rows[2][2]) == {"n": None, "tags": []}


def test_out_must_be_a_file_in_an_existing_folder(tmp_path):
    t = pa.table({"a": [1]})
    for fmt in ("csv", "parquet"):
        with pytest.raises(CorpusError, match="does not exist"):
            write_result(_reader(t), fmt=fmt, out=str(tmp_path / "no" / "r.out"))
        with pytest.raises(CorpusError, match="is a folder"):
            write_result(_reader(t), fmt=fmt, out=str(tmp_path))


def test_piped_table_keeps_values_whole(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    words = " ".join(f"word{i}" for i in range(40))  # ~280 characters: cut to 200, not folded
    out = io.StringIO()
    write_result(_reader(pa.table({"text": [words], "n": [1]})), stream=out)
    assert words[:197] + "..." in out.getvalue()
    assert max(len(line) for line in out.getvalue().splitlines()) > 200
