"""Lineage across derived tables, walked transitively from any version."""

from __future__ import annotations

from catalog import Lineage


def _texts(lh, book, text):
    return lh.merge("texts", {"book_id": [book], "variant": ["edited"], "text": [text]},
                    lineage=Lineage(operation="ingest", sources=[f"/share/{book}.txt"]))


def test_lineage_across_two_derived_tables(lakehouse):
    lh = lakehouse
    _texts(lh, "b1", "one")
    texts_v = _texts(lh, "b2", "two")["version"]
    # derived table 1: alignments read texts
    align_v = lh.append("alignments", {"book_id": ["b1"], "raw_variant": ["ocr"], "cer": [0.1]},
                        lineage=Lineage(operation="mine", inputs=lh.pin("texts")))
    # derived table 2: artifacts read alignments and texts
    art_v = lh.append("artifacts", {"kind": ["char_confusion"], "raw": ["0"], "edited": ["o"],
                                    "context": ["n_e"], "count": [3]},
                      lineage=Lineage(operation="mine", inputs=lh.pin("alignments", "texts"),
                                      config={"min_count": 2}))
    root = lh.lineage("artifacts")
    assert (root.table, root.version) == ("artifacts", art_v)
    assert root.edges() == {
        ("artifacts", art_v, "alignments", align_v),
        ("artifacts", art_v, "texts", texts_v),
        ("alignments", align_v, "texts", texts_v),
    }
    texts_node = next(p for p in root.parents if p.table == "texts")
    assert texts_node.sources == ["/share/b1.txt", "/share/b2.txt"]
    assert {c.operation for c in texts_node.commits} == {"create", "ingest"}
    d = root.to_dict()
    assert d["operations"] == ["create", "mine"]
    assert [i["table"] for i in d["inputs"]] == ["alignments", "texts"]

    # Later inputs do not leak into the lineage of an earlier version.
    _texts(lh, "b3", "three")
    lh.append("alignments", {"book_id": ["b3"], "raw_variant": ["ocr"], "cer": [0.2]},
              lineage=Lineage(operation="mine", inputs=lh.pin("texts")))
    old = lh.lineage("alignments", align_v)
    assert old.edges() == {("alignments", align_v, "texts", texts_v)}
    new = lh.lineage("alignments")
    assert ("alignments", align_v + 1, "texts", texts_v + 1) in new.edges()


def test_lineage_rejects_unpinned_inputs():
    import pytest

    with pytest.raises(ValueError, match="pinned to a table version"):
        Lineage(operation="x", inputs={"texts": None})  # type: ignore[dict-item]
