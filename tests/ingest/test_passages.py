"""Importing labelled passages: good rows become books/texts/scores, bad rows are reported."""

from __future__ import annotations

import pytest

from catalog import ConfigError
from ingest.passages import ImportConfig, run_import

CONFIG = ImportConfig(id_col="ID", text_col="Excerpt", title_col="Title",
                      scores={"bt_easiness": "BT", "lexile": "Lexile"}, id_prefix="p-")


def _write(tmp_path, text, name="passages.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_and_rejects(lakehouse, tmp_path):
    path = _write(tmp_path, (
        "ID,Title,Excerpt,BT,Lexile\n"
        '1,One,"A short text, with a comma.",0.5,700\n'
        '2,Two,"Multi\nline text.",-1.25,\n'       # no lexile: kept, one score only
        "3,Three,,0.1,800\n"                      # empty text
        ",Four,Text four.,0.2,900\n"              # empty id
        "1,Dup,Text again.,0.3,900\n"             # duplicate id
        "5,Five,Text five.,high,900\n"            # score not a number
        "6,Six,Text six.,0.7,410L-600L\n"         # a range is not a number
    ))
    r = run_import(lakehouse, path, config=CONFIG)
    assert [(x.row, x.passage_id) for x in r.rejected] == [
        (3, "3"), (4, None), (5, "1"), (6, "5"), (7, "6")]
    assert "empty text" in r.rejected[0].reason
    assert "first at row 1" in r.rejected[2].reason
    assert "'high'" in r.rejected[3].reason
    books = {b["book_id"]: b for b in lakehouse.read("books").to_pylist()}
    assert set(books) == {"p-1", "p-2"}
    assert books["p-1"]["title"] == "One" and books["p-1"]["n_words"] == 6
    texts = {t["book_id"]: t["text"] for t in lakehouse.read("texts").to_pylist()}
    assert texts["p-2"] == "Multi\nline text."
    scores = sorted((s["book_id"], s["metric"], s["value"], s["source_row"])
                    for s in lakehouse.read("scores").to_pylist())
    assert scores == [("p-1", "bt_easiness", 0.5, 1), ("p-1", "lexile", 700.0, 1),
                      ("p-2", "bt_easiness", -1.25, 2)]
    # lineage names the file and its hash; the bytes are kept in the object store
    c = lakehouse.history("scores", limit=1)[0]
    assert c.operation == "import" and str(path) in c.sources[0]
    assert c.config["rejected"] == 5
    assert len(list(lakehouse.store.list("raw/"))) == 1
    # re-import adds nothing
    run_import(lakehouse, path, config=CONFIG)
    assert lakehouse.read("scores").num_rows == 3 and lakehouse.read("books").num_rows == 2


def test_semicolon_csv_and_parquet(lakehouse, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _write(tmp_path, "ID;Title;Excerpt;BT;Lexile\n7;T;Some text.;1,5;\n", "semi.csv")
    r = run_import(lakehouse, path, config=CONFIG)
    assert [x.reason for x in r.rejected] == [
        "score bt_easiness in column 'BT' is not a number: '1,5'"]
    pq.write_table(pa.table({"ID": [8], "Title": ["P"], "Excerpt": ["Parquet text."],
                             "BT": [0.25], "Lexile": [None]}), tmp_path / "p.parquet")
    r = run_import(lakehouse, tmp_path / "p.parquet", config=CONFIG)
    assert r.rejected == [] and r.scores.column("value").to_pylist() == [0.25]


def test_config_errors_name_the_problem(lakehouse, tmp_path):
    path = _write(tmp_path, "id,text\n1,x\n")
    with pytest.raises(ConfigError, match=r"no column\(s\) \['ID', 'Excerpt'"):
        run_import(lakehouse, path, config=CONFIG)
    with pytest.raises(ConfigError, match="no such file"):
        run_import(lakehouse, tmp_path / "missing.csv", config=CONFIG)
    with pytest.raises(ConfigError, match=r"\.csv, \.tsv or \.parquet"):
        run_import(lakehouse, _write(tmp_path, "x", "a.xlsx"), config=CONFIG)
    with pytest.raises(ConfigError, match="id_col must name a column"):
        ImportConfig(id_col="", text_col="t")
