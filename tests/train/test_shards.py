"""Shard building: windows, the book split, targets, shard files, manifest versions (the
`corpus shards` commands: tests/corpus/test_train_commands.py)."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import ConfigError, CorpusError, Lakehouse, Lineage, key_from_uri, sha256_file
from catalog.rules import current_values
from ingest.passages import ImportConfig, run_import
from ingest.sample import sample_passages
from tests.helpers import TOKENIZER, small_config
from train.backbones import load_tokenizer, resolve_backbone
from train.shards import (
    SHARD_SCHEMA,
    books_by_split,
    build_shards,
    cut_windows,
    manifest_rows,
    manifest_summary,
    pick_validation_books,
    read_manifest,
    select_texts,
    shard_entry,
    split_by_work,
    split_texts,
    tokenise,
    window_starts,
    work_key,
)


def _shard_rows(lh: Lakehouse, manifest: pa.Table) -> pa.Table:
    tables = []
    for uri in manifest.column("shard_uri").to_pylist():
        tables.append(pq.read_table(io.BytesIO(lh.store.get_bytes(key_from_uri(uri)))))
    return pa.concat_tables(tables)


def _csv_scores() -> dict[str, float]:
    with open(sample_passages(), newline="") as f:
        return {f"clear-{r['ID']}": float(r["BT_easiness"]) for r in csv.DictReader(f)}


# ---- pure parts ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 60, 61, 200])
def test_windows_cover_the_text(n):
    ids = np.arange(1000, 1000 + n, dtype=np.int32)
    seq_len, pre, suf = 32, [101], [102]
    body = seq_len - 2

    first = cut_windows(ids, seq_len=seq_len, window="first", stride=None, prefix=pre, suffix=suf)
    assert len(first) == (1 if n else 0)
    if n:
        assert first[0].tolist() == [101, *ids[:body].tolist(), 102]

    chunks = cut_windows(ids, seq_len=seq_len, window="chunks", stride=None, prefix=pre,
                         suffix=suf)
    assert all(len(w) <= seq_len and w[0] == 101 and w[-1] == 102 for w in chunks)
    rebuilt = [t for w in chunks for t in w[1:-1].tolist()]
    assert rebuilt == ids.tolist()  # consecutive, no gap, no overlap

    over = cut_windows(ids, seq_len=seq_len, window="overlap", stride=7, prefix=pre, suffix=suf)
    starts = window_starts(n, body=body, window="overlap", stride=7)
    covered = set()
    for s, w in zip(starts, over, strict=True):
        assert w[1:-1].tolist() == ids[s:s + body].tolist()
        covered |= set(range(s, s + len(w) - 2))
    assert covered == set(range(n))
    if len(starts) > 2:
        assert all(b - a == 7 for a, b in itertools.pairwise(starts[:-1]))
        assert starts[-1] + body == n  # the last window ends with the text


def test_split_is_by_book_stable_and_seeded():
    books = [f"b{i}" for i in range(400)]
    val = pick_validation_books(books, val_frac=0.2, seed=3)
    assert 40 < len(val) < 120  # about 20 %
    assert pick_validation_books(reversed(books), val_frac=0.2, seed=3) == val
    # Adding books never moves an existing book between splits.
    more = pick_validation_books([*books, *(f"new{i}" for i in range(100))], val_frac=0.2,
                                 seed=3)
    assert more & set(books) == val
    assert pick_validation_books(books, val_frac=0.2, seed=4) != val
    assert pick_validation_books(books, val_frac=0.0, seed=3) == set()
    assert len(pick_validation_books(["a", "b"], val_frac=0.01, seed=0)) == 1  # at least one


def test_split_by_work_keeps_a_source_volume_together(sample_lakehouse, tmp_path):
    works = {f"b{i}": work_key("Ann Author" if i % 3 else None, f"Volume {i // 4}", f"b{i}")
             for i in range(200)}
    val = split_by_work(works, val_frac=0.3, seed=1)
    for w in set(works.values()):
        members = {b for b, x in works.items() if x == w}
        assert members <= val or not members & val, w  # never straddles the split
    assert work_key(None, None, "b7") == "b7"
    assert work_key(" ann  AUTHOR", "Volume 1", "x") == work_key("Ann Author", "volume 1", "y")
    # end to end: the sample's validation books share no (author, title) with training
    lh = sample_lakehouse
    report = build_shards(lh, config=small_config("bywork", split_by="work", val_frac=0.3))
    manifest, _ = read_manifest(lh, "bywork")
    meta = {b["book_id"]: (b["author"], b["title"]) for b in lh.read("books").to_pylist()}
    split_of: dict = {}
    for row in manifest.to_pylist():
        for book in _shard_rows(lh, pa.Table.from_pylist([row])).column("book_id").to_pylist():
            split_of.setdefault(meta[book], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert report.books["validation"] > 0
    assert lh.history("shards", limit=1)[0].inputs.keys() == {"texts", "scores", "books"}
    with pytest.raises(ConfigError, match="split_by"):
        small_config(split_by="title")


def test_held_out_books_and_their_works_always_go_to_validation():
    ids = [f"b{i:03d}" for i in range(60)]
    texts = pa.table({"book_id": ids, "text": ["x"] * 60})
    free = split_texts(texts, val_frac=0.2, seed=0)
    free_val = set(free["validation"].column("book_id").to_pylist())
    forced = {"b001", "b002", "b050"}
    parts = split_texts(texts, val_frac=0.2, seed=0, hold_out=("b001", "b002", "b05*"))
    val = set(parts["validation"].column("book_id").to_pylist())
    held = forced | {f"b05{i}" for i in range(10)}
    assert held <= val
    # the fraction is drawn from the other books exactly as before
    assert val - held == free_val - held
    # by work: a held-out book takes its whole work with it
    books = pa.table({"book_id": ids, "title": [f"Vol {int(i[1:]) // 5}" for i in ids],
                      "author": ["A"] * 60})
    parts = split_texts(texts, val_frac=0.0, seed=0, split_by="work", books=books,
                        hold_out=("b012",))
    assert set(parts["validation"].column("book_id").to_pylist()) == {
        "b010", "b011", "b012", "b013", "b014"}


def test_books_pattern_selects_books(sample_lakehouse):
    lh = sample_lakehouse
    report = build_shards(lh, config=small_config("some", books=("clear-1*", "clear-2*")))
    manifest, _ = read_manifest(lh, "some")
    books = set(_shard_rows(lh, manifest).column("book_id").to_pylist())
    assert books and all(b.startswith(("clear-1", "clear-2")) for b in books)
    assert sum(report.books.values()) == len(books)
    with pytest.raises(CorpusError, match="no book id matches"):
        build_shards(lh, config=small_config("none", books=("isbn-*",)))


def test_current_score_is_the_latest_per_book():
    t = pa.table({
        "book_id": ["a", "a", "b", "b", "c"],
        "metric": ["bt_easiness", "bt_easiness", "bt_easiness", "bt_easiness", "lexile"],
        "value": [1.0, 2.0, 5.0, None, 900.0],
        "scored_at": [datetime(2020, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC),
                      datetime(2020, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC),
                      datetime(2020, 1, 1, tzinfo=UTC)],
        "source_file": ["x", "y", "x", "y", "x"],
        "source_row": [1, 1, 2, 2, 3],
    })
    assert current_values(t, "bt_easiness") == {"a": 2.0}  # b's latest score is empty
    assert current_values(t, "lexile") == {"c": 900.0}


def _scores(rows: list[tuple[str, float | None, int]]) -> pa.Table:
    """Score rows (book, value, year) of bt_easiness in the scores table's schema."""
    from catalog import spec

    return pa.Table.from_pylist(
        [{"book_id": b, "metric": "bt_easiness", "value": v,
          "scored_at": datetime(y, 1, 1, tzinfo=UTC), "source_file": "s.csv", "source_row": i}
         for i, (b, v, y) in enumerate(rows)], schema=spec("scores").schema)


def test_the_core_runs_without_a_lakehouse():
    from catalog import spec

    texts = [pa.table({"book_id": ["b", "a", "a"], "variant": ["edited", "edited", "ocr"],
                       "text": ["Bee text here.", "A first book, long enough for two windows "
                                "of sixteen tokens each, or even three of them.", "a ocr"]}),
             pa.table({"book_id": ["c", "d"], "variant": ["edited", "noisy/upper-v1/3"],
                       "text": ["Sea text.", "DEE TEXT, NOISY."]})]
    # b's latest score is empty and c has none: both left out
    scores = _scores([("a", 1.0, 2020), ("b", 2.0, 2020), ("b", None, 2024), ("d", -1.0, 2020)])
    sel = select_texts(texts, scores, metric="bt_easiness", variants=("edited", "noisy/*"))
    assert sel.variants == ["edited", "noisy/upper-v1/3"]  # ocr not asked for
    assert sel.excluded_books == ["b", "c"]
    assert sel.texts.select(["book_id", "variant", "label"]).to_pylist() == [
        {"book_id": "a", "variant": "edited", "label": 1.0},
        {"book_id": "d", "variant": "noisy/upper-v1/3", "label": -1.0}]
    assert select_texts(texts, scores, metric="bt_easiness", variants=("edited",),
                        books=("a*",)).texts["book_id"].to_pylist() == ["a"]
    with pytest.raises(CorpusError, match="no texts variant matches corrected in texts@3"):
        select_texts(texts, scores, metric="bt_easiness", variants=("corrected",),
                     texts_ref="texts@3")

    parts = split_texts(sel.texts, val_frac=0.5, seed=0)
    books = {s: set(t["book_id"].to_pylist()) for s, t in parts.items()}
    assert books["train"] and books["validation"] and not books["train"] & books["validation"]

    tok = load_tokenizer(TOKENIZER)
    out = list(tokenise(parts, tokenizer=TOKENIZER, seq_len=16, window="chunks", stride=None))
    samples = {s: pa.concat_tables([r for split, r in out if split == s]) for s in parts}
    for split, rows in samples.items():
        assert rows.schema == SHARD_SCHEMA
        for r in rows.to_pylist():
            assert r["book_id"] in books[split]
            assert r["label"] == {"a": 1.0, "d": -1.0}[r["book_id"]]
            assert len(r["input_ids"]) <= 16 and r["input_ids"][0] == tok.cls_token_id
    a_windows = [r for r in samples[next(s for s in parts if "a" in books[s])].to_pylist()
                 if r["book_id"] == "a"]
    assert [r["window"] for r in a_windows] == list(range(len(a_windows))) and len(a_windows) > 1

    written = [shard_entry(samples[s], split=s, index=0, uri=f"mem://{s}", sha256=s * 8,
                           size_bytes=1) for s in parts]
    rows = manifest_rows(written, config=small_config(), pad_id=0, texts_version=3,
                         scores_version=4, build_id="b1", created_at=datetime.now(UTC))
    manifest = pa.Table.from_pylist(rows, schema=spec("shards").schema)
    assert books_by_split(manifest, dataset="clear") == books
    assert manifest["n_samples"].to_pylist() == [samples[s].num_rows for s in parts]
    assert manifest["target"].to_pylist() == ["bt_easiness"] * 2  # the metric's name


def test_an_old_manifest_without_book_ids_asks_for_a_rebuild():
    from catalog import spec

    old = pa.Table.from_pylist([{"dataset": "clear", "shard_uri": "u", "split": "train"}],
                               schema=spec("shards").schema)
    with pytest.raises(ConfigError, match=r"'clear' at shards@2 .*corpus shards build --name "
                                          r"clear"):
        books_by_split(old, dataset="clear", where="shards@2")
    with pytest.raises(ConfigError, match="has no shards"):
        books_by_split(old, dataset="other")


def test_manifest_summary_totals_each_split():
    common = {"tokenizer": "t", "seq_len": 64, "window": "chunks", "target": "bt_easiness"}
    manifest = pa.Table.from_pylist([
        {"dataset": "b", "split": "train", "shard_uri": "1", "n_samples": 2, "n_tokens": 20,
         **common},
        {"dataset": "a", "split": "validation", "shard_uri": "2", "n_samples": 1,
         "n_tokens": 5, **common},
        {"dataset": "a", "split": "train", "shard_uri": "3", "n_samples": 3, "n_tokens": 30,
         **common},
        {"dataset": "a", "split": "train", "shard_uri": "4", "n_samples": 4, "n_tokens": 40,
         **common},
    ])
    got = manifest_summary(manifest).to_pylist()
    assert [(r["dataset"], r["split"], r["shards"], r["samples"], r["tokens"]) for r in got] == [
        ("a", "train", 2, 7, 70), ("a", "validation", 1, 1, 5), ("b", "train", 1, 2, 20)]
    assert all(r["target"] == "bt_easiness" and r["seq_len"] == 64 for r in got)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="dataset name"):
        small_config("../up")
    with pytest.raises(ConfigError, match="window"):
        small_config(window="sliding")
    with pytest.raises(ConfigError, match="only applies to --window overlap"):
        small_config(stride=8)
    with pytest.raises(ConfigError, match="val_frac"):
        small_config(val_frac=1.0)
    assert small_config(window="overlap").stride == 32  # default: half a window


def test_backbone_aliases_and_paths(tmp_path):
    folder = resolve_backbone(TOKENIZER)
    assert (folder / "tokenizer.json").is_file()
    assert resolve_backbone(str(folder)) == folder
    with pytest.raises(ConfigError, match="all-minilm-l6-v2"):
        resolve_backbone("no-such-model")
    with pytest.raises(ConfigError, match="Cannot load a tokenizer"):
        load_tokenizer(str(tmp_path))  # an empty folder


def test_same_backbone_compares_aliases_without_converting(tmp_path, monkeypatch):
    from train.backbones import same_backbone

    monkeypatch.setenv("CORPUS_CACHE", str(tmp_path / "cache"))
    assert same_backbone(TOKENIZER, TOKENIZER.upper())
    assert same_backbone(TOKENIZER, str(resolve_backbone(TOKENIZER)))  # alias and its folder
    # refusing SmolLM2 for MiniLM shards converts nothing (it would take seconds and print)
    assert not same_backbone(TOKENIZER, "smollm2-135m")
    assert not (tmp_path / "cache").exists()


# ---- building from the imported sample ----------------------------------------------------
def test_build_writes_verified_shards_and_manifest(built):
    lh, report = built
    manifest, version = read_manifest(lh, "clear")
    assert version == report.version
    assert report.shards["train"] > 5  # the small cap spreads the sample over many files
    assert report.texts == 60 and report.excluded_no_target == 0
    tok = load_tokenizer(TOKENIZER)
    for row in manifest.to_pylist():
        data = lh.store.get_bytes(key_from_uri(row["shard_uri"]))
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert row["sha256"] in row["shard_uri"]  # content-addressed
        t = pq.read_table(io.BytesIO(data))
        assert t.num_rows == row["n_samples"] <= 16
        assert sum(len(x) for x in t.column("input_ids").to_pylist()) == row["n_tokens"]
        assert row["tokenizer"] == TOKENIZER and row["seq_len"] == 64
        assert row["pad_id"] == tok.pad_token_id
        assert row["texts_version"] == report.texts_version
    rows = _shard_rows(lh, manifest)
    ids = rows.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == sum(report.samples.values())
    # Every window is [CLS] body [SEP], the bodies of a text's windows are the whole text,
    # and the target is the passage's BT_easiness from the imported CSV.
    truth = _csv_scores()
    texts = {r["book_id"]: r["text"] for r in lh.read("texts").to_pylist()}
    by_book: dict[str, list[tuple[int, list[int]]]] = {}
    for r in rows.to_pylist():
        assert r["input_ids"][0] == tok.cls_token_id and r["input_ids"][-1] == tok.sep_token_id
        assert len(r["input_ids"]) <= 64
        assert r["label"] == pytest.approx(truth[r["book_id"]])
        by_book.setdefault(r["book_id"], []).append((r["window"], r["input_ids"][1:-1]))
    assert set(by_book) == set(truth)
    for book, wins in list(by_book.items())[:10]:
        body = [t for _, w in sorted(wins) for t in w]
        assert body == tok(texts[book], add_special_tokens=False)["input_ids"]
    # Lineage: the commit names the pinned texts and scores versions.
    commit = lh.history("shards", 1)[0]
    assert commit.operation == "shards"
    assert commit.inputs == {"texts": report.texts_version, "scores": report.scores_version}
    assert commit.config["dataset"] == "clear"


def test_the_manifest_records_each_shards_books(built):
    lh, report = built
    manifest, _ = read_manifest(lh, "clear")
    for row in manifest.to_pylist():
        rows = _shard_rows(lh, pa.Table.from_pylist([row]))
        assert row["book_ids"] == sorted(set(rows["book_id"].to_pylist()))
        assert row["n_books"] == len(row["book_ids"])
    books = books_by_split(manifest, dataset="clear")
    assert {s: len(b) for s, b in books.items()} == report.books


def test_no_variant_of_a_validation_book_is_in_training(sample_lakehouse):
    lh = sample_lakehouse
    edited = lh.read("texts")
    col = edited.schema.get_field_index
    for variant in ("ocr", "noisy/upper/7"):
        other = edited.set_column(col("variant"), "variant",
                                  pa.array([variant] * edited.num_rows))
        other = other.set_column(col("text"), "text", pa.array(
            [f"{variant}: {t[::-1]}" for t in edited.column("text").to_pylist()],
            pa.large_string()))
        lh.merge("texts", other, lineage=Lineage(operation="test-variants"))
    report = build_shards(lh, config=small_config(variants=("edited", "noisy/*"),
                                                  val_frac=0.25, window="first"))
    assert report.variants == ["edited", "noisy/upper/7"]  # ocr not asked for
    manifest, _ = read_manifest(lh, "clear")
    train = _shard_rows(lh, manifest.filter(pa.compute.equal(manifest["split"], "train")))
    val = _shard_rows(lh, manifest.filter(pa.compute.equal(manifest["split"], "validation")))
    train_books, val_books = set(train["book_id"].to_pylist()), set(val["book_id"].to_pylist())
    assert val_books and train_books and not train_books & val_books
    assert len(train_books | val_books) == 60
    # each book appears with both variants, on its side of the split only
    for t in (train, val):
        pairs = set(zip(t["book_id"].to_pylist(), t["variant"].to_pylist(), strict=True))
        assert pairs == {(b, v) for b, _ in pairs for v in ("edited", "noisy/upper/7")}
    assert report.books == {"train": len(train_books), "validation": len(val_books)}
    # a noisy variant's sample id (with slashes) is found for the skip list
    from train.data import ShardStream

    poison = next(s for s in train["sample_id"].to_pylist() if "|noisy/upper/7|" in s)
    stream = ShardStream(lh, "clear", skip=[poison])
    ids = [x["sample_id"] for x in stream]
    assert poison not in ids and len(ids) == train.num_rows - 1


def test_books_without_the_target_are_left_out_and_counted(tmp_path):
    lh = Lakehouse(str(tmp_path / "lh"))
    src = tmp_path / "p.csv"
    src.write_text("ID,Text,Score\n1,A first short passage.,0.5\n2,A second one here.,\n"
                   "3,And a third passage.,-1.25\n")
    run_import(lh, src, config=ImportConfig(id_col="ID", text_col="Text",
                                            scores={"bt_easiness": "Score"}))
    report = build_shards(lh, config=small_config("tiny", val_frac=0.0))
    assert report.excluded_no_target == 1 and report.excluded_books == ["2"]
    rows = _shard_rows(lh, read_manifest(lh, "tiny")[0])
    assert sorted(set(rows["book_id"].to_pylist())) == ["1", "3"]
    with pytest.raises(CorpusError, match="no texts variant matches"):
        build_shards(lh, config=small_config("tiny", variants=("noisy/*",)))
    with pytest.raises(CorpusError, match="lexile"):
        build_shards(lh, config=small_config("tiny", target="lexile"))


def test_a_rebuild_is_a_new_version_and_the_old_one_reads_the_same(sample_lakehouse, tmp_path):
    lh = sample_lakehouse
    v1 = build_shards(lh, config=small_config()).version
    m1, _ = read_manifest(lh, "clear", version=v1)
    rows1 = _shard_rows(lh, m1)
    # New passages arrive and the dataset is rebuilt with another window setting.
    src = tmp_path / "more.csv"
    src.write_text("ID,Text,Score\nx1,Some new passage for a later version.,0.1\n")
    run_import(lh, src, config=ImportConfig(id_col="ID", text_col="Text",
                                            scores={"bt_easiness": "Score"}))
    v2 = build_shards(lh, config=small_config(seq_len=32)).version
    assert v2 > v1
    m2, _ = read_manifest(lh, "clear")
    assert m2["seq_len"].to_pylist()[0] == 32
    assert set(m2["shard_uri"].to_pylist()) != set(m1["shard_uri"].to_pylist())
    m1_again, resolved = read_manifest(lh, "clear", version=v1)
    assert resolved == v1
    assert m1_again.to_pylist() == m1.to_pylist()
    assert _shard_rows(lh, m1_again).equals(rows1)
    for uri, sha in zip(m1["shard_uri"].to_pylist(), m1["sha256"].to_pylist(), strict=True):
        assert sha256_file(uri) == sha  # local root: the URI is the file
    # Another dataset built meanwhile leaves this one's rows alone.
    build_shards(lh, config=small_config("other"))
    assert read_manifest(lh, "clear")[0].to_pylist() == m2.to_pylist()


def test_same_inputs_give_the_same_shard_files(sample_lakehouse):
    lh = sample_lakehouse
    # one process, one batch vs a pool of 2 workers over 15 batches: the same files
    a = build_shards(lh, config=small_config("c"))
    b = build_shards(lh, config=small_config("c", workers=2, batch_texts=4))
    assert b.version > a.version
    sha_a = read_manifest(lh, "c", version=a.version)[0]["sha256"].to_pylist()
    assert read_manifest(lh, "c", version=b.version)[0]["sha256"].to_pylist() == sha_a


def test_a_shards_table_from_an_older_schema_gains_the_new_columns(sample_lakehouse):
    from deltalake import DeltaTable

    from catalog import spec

    lh = sample_lakehouse
    old = pa.schema([f for f in spec("shards").schema
                     if f.name not in ("first_sample", "last_sample", "build_id", "pad_id")])
    DeltaTable.create(lh.table_uri("shards"), old)
    report = build_shards(lh, config=small_config())
    manifest, version = read_manifest(lh, "clear")
    assert version == report.version
    assert all(manifest["first_sample"].to_pylist())
    assert set(manifest["build_id"].to_pylist()) == {report.build_id}
