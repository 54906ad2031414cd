"""Artifact mining: structure recognised as structure, confusions counted with their
probabilities, on a typeset fixture with known furniture and on real Tesseract output."""

from __future__ import annotations

import random
import re

import pyarrow.compute as pc
import pytest

from catalog import ConfigError, CorpusError, Lakehouse
from noise.align import align
from noise.mine import (
    MineConfig,
    Pair,
    cleanup,
    mine,
    mine_book,
    run_mine,
    template,
    top_confusions,
)

TITLE, AUTHOR = "The Lighthouse Keeper", "Ada Merriweather"
WORDS = ("morning", "harbour", "lantern", "keeper", "modern", "turning", "corner", "stormy",
         "evening", "window", "seaward", "rocks", "shipwreck", "rescue", "lighthouse",
         "gallery", "children", "breakfast", "between", "northern", "southern", "weather",
         "whisper", "barrel")


def _edited(seed: int = 1, chapters: int = 3, paragraphs: int = 6) -> tuple[str, list[int]]:
    rng = random.Random(seed)
    blocks, offsets, text = [], [], ""
    for c in range(1, chapters + 1):
        paras = []
        for _ in range(paragraphs):
            sent = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "."
                    for _ in range(rng.randint(3, 6))]
            paras.append(" ".join(s.capitalize() for s in sent))
        block = f"Chapter {c}\n\n" + "\n\n".join(paras)
        offsets.append(len(text) + (2 if text else 0))
        text = (text + "\n\n" if text else "") + block
        blocks.append(block)
    return text, offsets


def _typeset(edited: str, *, width: int = 60, lines_per_page: int = 18,
             hyphen_every: int = 5) -> tuple[str, list[int], dict]:
    """A scanned book's OCR text: title/copyright page, lines wrapped at ``width`` with every
    ``hyphen_every``-th line end breaking a long word with a hyphen, pages of
    ``lines_per_page`` lines under a running header (author on even pages, TITLE on odd),
    a page number at every page foot, and OCR confusions rn -> m, "e" -> "c" in "keeper"."""
    stats = {"hyphenations": 0, "rn": 0, "keeper": 0, "pages": 0, "line_ends": 0}
    lines: list[str] = []
    for para in edited.split("\n\n"):
        words, line, n_end, start = para.split(" "), "", 0, len(lines)
        for w in words:
            if line and len(line) + 1 + len(w) > width:
                n_end += 1
                cut = min(len(w) // 2, width - len(line) - 2)
                if n_end >= hyphen_every and len(w) >= 6 and cut >= 3:  # a break is due
                    lines.append(line + " " + w[:cut] + "-")
                    stats["hyphenations"] += 1
                    line, n_end = w[cut:], 0
                    continue
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}" if line else w
        lines.append(line)
        stats["line_ends"] += len(lines) - start - 1  # inside this paragraph
        lines.append("")
    body = []
    for ln in lines:
        if "modern" in ln:
            stats["rn"] += ln.count("modern")
            ln = ln.replace("modern", "modem")  # rn -> m
        if "keeper" in ln:
            stats["keeper"] += ln.count("keeper")
            ln = ln.replace("keeper", "kecper")
        body.append(ln)
    front = (f"{TITLE}\n\nby {AUTHOR}\n\nCopyright (c) 1911 by {AUTHOR}\nAll rights "
             "reserved.\nISBN 978-1-2345-6789-7\n\nPrinted in the United States of America")
    pages = [front]
    for k in range(0, len(body), lines_per_page):
        page_no = len(pages) + 1
        header = AUTHOR if page_no % 2 == 0 else TITLE.upper()
        chunk = "\n".join(body[k:k + lines_per_page]).strip("\n")
        pages.append(f"{header}\n\n{chunk}\n\n{page_no - 1}")
        stats["pages"] += 1
    text, offsets = "", []
    for p in pages:
        if text:
            text += "\n\n"
        offsets.append(len(text))
        text += p
    return text, offsets, stats


@pytest.fixture(scope="module")
def typeset():
    edited, chapters = _edited()
    raw, pages, stats = _typeset(edited)
    pair = Pair("9780000000001", edited, raw, page_offsets=pages, chapter_offsets=chapters,
                title=TITLE, author=AUTHOR)
    return pair, stats


def _rows(artifacts, kind):
    return [r for r in artifacts.to_pylist() if r["kind"] == kind]


def test_structure_of_a_typeset_book(typeset):
    pair, stats = typeset
    assert stats["pages"] >= 4 and stats["hyphenations"] >= 3 and stats["rn"] >= 2
    alignments, artifacts = mine([pair], texts_version=7)
    row = alignments.to_pylist()[0]
    assert row["book_id"] == pair.book_id and row["texts_version"] == 7
    assert row["n_pages"] == stats["pages"] + 1
    assert row["cer"] == pytest.approx(align(pair.edited, pair.raw).cer)
    # the furniture explains most edits: the text alone is much cleaner
    assert row["structure_chars"] > 0 and row["body_cer"] < row["cer"] / 2

    front = _rows(artifacts, "front_matter")
    assert [r["raw"] for r in front] == [
        "{title}\nby {author}\nCopyright (c) {year} by {author}\nAll rights reserved.\n"
        "ISBN {isbn}\nPrinted in the United States of America"]
    assert front[0]["probability"] == 1.0 and front[0]["context"] == "page 1"

    headers = {(r["raw"], r["context"]): r for r in _rows(artifacts, "running_header")}
    assert set(headers) == {("{author}", "top:even"), ("{TITLE}", "top:odd")}
    for r in headers.values():  # every body page has its header, nothing else is one
        assert r["probability"] == 1.0 and r["count"] == r["opportunities"]
    assert sum(r["count"] for r in headers.values()) == stats["pages"]

    numbers = _rows(artifacts, "page_number")
    assert [(r["raw"], r["context"], r["value"]) for r in numbers] == [("{n}", "bottom", -1.0)]
    assert numbers[0]["count"] == stats["pages"] and numbers[0]["probability"] == 1.0

    heads = _rows(artifacts, "heading")
    assert [(r["raw"], r["edited"], r["count"]) for r in heads] == [
        ("Chapter {n}", "Chapter {n}", 3)]

    hyph = _rows(artifacts, "hyphenation")
    assert sum(r["count"] for r in hyph) == stats["hyphenations"]
    assert {r["raw"] for r in hyph} == {"-\n"}
    breaks = _rows(artifacts, "line_break")
    wraps = [r for r in breaks if r["context"] == "wrap"]
    assert wraps and 40 < wraps[0]["value"] <= 60  # the line width the book was set at
    # every line end inside a paragraph is exactly one of: a wrap, a hyphenation, or (at a
    # page foot) a page break where the edited text has a space
    in_para_page_breaks = sum(r["count"] for r in breaks
                              if r["context"] == "page_break" and r["edited"] == " ")
    assert (wraps[0]["count"] + stats["hyphenations"] + in_para_page_breaks
            == stats["line_ends"])
    # hyphenation rate per line end: hyphenated ends / (hyphenated + plain wraps)
    assert hyph[0]["probability"] == pytest.approx(
        stats["hyphenations"] / (stats["hyphenations"] + wraps[0]["count"]), rel=0.05)

    conf = _rows(artifacts, "char_confusion")
    rn = [r for r in conf if (r["edited"], r["raw"]) == ("rn", "m")]
    assert rn and sum(r["count"] for r in rn) == stats["rn"]
    # the chance per occurrence of the context in the edited text ("ern " also occurs in
    # "northern ", which OCR read right)
    for r in rn:
        left, _, right = r["context"].partition("_")
        needle = "e" + "rn" + right.replace("$", "\n")
        assert left == "e"
        assert r["opportunities"] == len(re.findall(f"(?={re.escape(needle)})",
                                                    pair.edited + "\n"))
        assert r["probability"] == pytest.approx(r["count"] / r["opportunities"])
    ec = [r for r in conf if (r["edited"], r["raw"]) == ("e", "c")]
    assert sum(r["count"] for r in ec) == stats["keeper"]
    assert all(0 < r["probability"] <= 1 and r["n_books"] == 1 for r in ec)
    # furniture never leaks into the character statistics
    assert not any(AUTHOR.split()[0] in r["raw"] or "ISBN" in r["raw"]
                   for r in artifacts.to_pylist()
                   if r["kind"] in ("char_confusion", "punctuation", "whitespace"))
    keys = [(r["kind"], r["raw"], r["edited"], r["context"]) for r in artifacts.to_pylist()]
    assert len(keys) == len(set(keys))


def test_counts_add_up_over_books(typeset):
    pair, _ = typeset
    others = [Pair(f"978000000000{i}", pair.edited, pair.raw, page_offsets=pair.page_offsets,
                   chapter_offsets=pair.chapter_offsets, title=TITLE, author=AUTHOR)
              for i in range(2, 5)]
    al1, one = mine([pair])
    al4, four = mine([pair, *others], config=MineConfig(workers=2))  # a process pool
    assert al4.column("book_id").to_pylist() == [pair.book_id] + [o.book_id for o in others]
    assert set(al4.column("cer").to_pylist()) == set(al1.column("cer").to_pylist())
    a = {(r["kind"], r["raw"], r["edited"], r["context"]): r for r in one.to_pylist()}
    b = {(r["kind"], r["raw"], r["edited"], r["context"]): r for r in four.to_pylist()}
    assert a.keys() == b.keys()
    for k, r in a.items():
        assert b[k]["count"] == 4 * r["count"] and b[k]["n_books"] == 4
        assert b[k]["probability"] == pytest.approx(r["probability"])


def test_plain_mapping_input_and_templates():
    al, ar = mine({"b1": ("Some text here.", "Sorne text here.")})
    assert al.num_rows == 1 and al.column("n_pages").to_pylist() == [1]
    rows = {(r["edited"], r["raw"]) for r in ar.to_pylist() if r["kind"] == "char_confusion"}
    assert ("m", "rn") in rows
    assert template("THE LIGHTHOUSE KEEPER", title=TITLE, author=AUTHOR) == "{TITLE}"
    assert template("by Ada Merriweather", title=TITLE, author=AUTHOR) == "by {author}"
    assert template("Copyright (c) 1911 by Ada Merriweather", title=TITLE,
                    author=AUTHOR) == "Copyright (c) {year} by {author}"
    assert template("ISBN 978-6-4148-0796- 1", title=None, author=None) == "ISBN {isbn}"


def test_cleanup_folds_chance_matches_into_the_insertion():
    ref = "Chapter 1\n\nIt was a dark night."
    hyp = "A Title Page\nby Someone\nCopyright 1900\n\nChapter 1\n\nIt was a dark night."
    blocks = cleanup(align(ref, hyp).blocks())
    edits = [b for b in blocks if b.tag != "equal"]
    assert len(edits) == 1 and hyp[edits[0].hyp_start:edits[0].hyp_end].startswith("A Title")


def test_config_is_validated():
    with pytest.raises(ConfigError, match="--variant"):
        MineConfig(raw_variant="edited")
    with pytest.raises(ConfigError, match="workers"):
        MineConfig(workers=0)


def test_mining_needs_pairs(tmp_path):
    lh = Lakehouse(str(tmp_path / "lh"))
    with pytest.raises(CorpusError, match="corpus ingest"):
        run_mine(lh, config=MineConfig())


# ---- real Tesseract output ---------------------------------------------------------------

@pytest.mark.slow
def test_mine_the_sample_share(small_pairs):
    """The bundled share's 4 scan/edited pairs: title/copyright pages, running headers,
    page numbers, headings and hyphenated line ends come out as structure; lineage names
    the texts."""
    report = run_mine(small_pairs, config=MineConfig())
    assert report.books == 4 and report.inputs["texts"] == small_pairs.version("texts")
    al = [r for r in small_pairs.read("alignments").to_pylist() if r["raw_variant"] == "ocr"]
    assert len(al) == 4
    for r in al:
        assert 0 < r["body_cer"] < r["cer"] < 0.5 and r["structure_chars"] > 100
        assert r["texts_version"] == report.inputs["texts"] and r["raw_variant"] == "ocr"
    ar = small_pairs.read("artifacts")
    ar = ar.filter(pc.equal(ar["raw_variant"], "ocr"))
    front = _rows(ar, "front_matter")
    assert sum(r["count"] for r in front) == 4
    assert front[0]["raw"].startswith("{title}\nby {author}\nCopyright (c) {year} by {author}")
    assert front[0]["count"] >= 2 and front[0]["probability"] >= 0.5
    headers = _rows(ar, "running_header")
    assert headers[0]["raw"] == "{author}" and headers[0]["count"] == 4
    numbers = _rows(ar, "page_number")  # at the foot of each body page, one less than its no.
    assert numbers and numbers[0]["raw"] == "{n}" and numbers[0]["count"] >= 3
    assert numbers[0]["value"] == -1.0 and numbers[0]["context"] == "bottom"
    assert _rows(ar, "heading") and sum(r["count"] for r in _rows(ar, "heading")) == 4
    hyph = _rows(ar, "hyphenation")
    assert hyph and hyph[0]["raw"] == "-\n" and hyph[0]["count"] >= 4
    assert 0 < hyph[0]["probability"] < 0.5
    confusions = [r for r in ar.to_pylist()
                  if r["kind"] in ("char_confusion", "punctuation", "whitespace")]
    assert len(confusions) >= 5
    assert all(0 < r["probability"] <= 1 and r["opportunities"] >= r["count"]
               for r in confusions)
    assert report.top and report.top[0]["count"] >= report.top[-1]["count"]
    for table in ("alignments", "artifacts"):
        c = small_pairs.history(table, limit=1)[0]
        assert c.operation == "mine" and c.inputs["texts"] == report.inputs["texts"]


@pytest.mark.slow
@pytest.mark.acceptance
def test_mine_multi_page_scans(dev_pairs):
    """Multi-page scans of the development share, OCR'd live (acceptance)."""
    report = run_mine(dev_pairs, config=MineConfig(workers=2))
    assert report.books == 3
    _check_multi_page(dev_pairs.read("artifacts"), dev_pairs.read("alignments"), report.top)


def test_mine_recorded_multi_page_scans(ocr_pairs):
    """The same three books from their recorded Tesseract output
    (tests/fixtures/ocr_pairs.json.gz), mined by the pure core."""
    pairs = [Pair(**{**p, "page_offsets": tuple(p["page_offsets"]),
                     "chapter_offsets": tuple(p["chapter_offsets"])}) for p in ocr_pairs]
    assert len(pairs) == 3 and all(len(p.page_offsets) >= 6 for p in pairs)
    al, ar = mine(pairs, config=MineConfig(workers=2))
    assert al.num_rows == 3
    _check_multi_page(ar, al, top_confusions(ar.to_pylist(), [p.edited for p in pairs]))


def _check_multi_page(ar, alignments, top):
    """Alternating running headers recognised as two patterns (not as hundreds of
    insertions), a page number with its offset, the most frequent confusions with
    probabilities."""
    ar = ar.filter(pc.equal(ar["raw_variant"], "ocr"))
    headers = {(r["raw"], r["context"]): r for r in _rows(ar, "running_header")}
    assert headers[("{author}", "top:even")]["probability"] >= 0.8
    assert headers[("{TITLE}", "top:odd")]["probability"] >= 0.8
    al = {r["book_id"]: r for r in alignments.to_pylist() if r["raw_variant"] == "ocr"}
    body_pages = sum(r["n_pages"] for r in al.values()) - len(al)  # a title page each
    assert sum(r["count"] for r in headers.values()) == body_pages >= 15
    numbers = _rows(ar, "page_number")
    pn = next(r for r in numbers if r["raw"] == "{n}" and r["value"] == -1.0)
    # the foot line is read even where layout analysis drops it; OCR garbles a few ("3 2")
    assert pn["count"] >= 0.6 * body_pages
    assert sum(r["count"] for r in _rows(ar, "hyphenation")) >= 10
    assert any(r["context"] == "page_break" for r in _rows(ar, "line_break"))
    assert all(r["body_cer"] < r["cer"] for r in al.values())
    assert top[0]["count"] >= 10 and 0 < top[0]["probability"] < 1
    assert any(t["kind"] == "punctuation" for t in top)


def test_book_mining_is_pure(typeset):
    pair, _ = typeset
    a, b = mine_book(pair, config=MineConfig()), mine_book(pair, config=MineConfig())
    assert a.seen == b.seen and a.chances == b.chances


def test_ligature_punctuation_and_whitespace_kinds():
    _, ar = mine({"b": ("The fine fish's fin. It was here.", "The ﬁne ﬁsh’s ﬁn, Itwas here.")})
    rows = ar.to_pylist()
    kinds = {(r["kind"], r["edited"], r["raw"]) for r in rows}
    assert {("ligature", "fi", "ﬁ"), ("punctuation", "'", "’"), ("punctuation", ".", ","),
            ("whitespace", " ", "")} <= kinds
    assert sum(r["count"] for r in rows if r["kind"] == "ligature") == 3
    # "fi" occurs 3 times, always read as the ligature: probability 1 in each context
    assert all(r["probability"] == 1.0 for r in rows if r["kind"] == "ligature")


def test_opportunity_counting_paths_agree():
    import itertools

    from noise.mine import _occurrences

    rng = random.Random(3)
    texts = ["".join(rng.choice("abc \n") for _ in range(2000)) for _ in range(3)]
    forms = ["".join(p) for k in range(3) for p in itertools.product("abc ", repeat=k)]
    many = {(e, f"{left}_{right}") for e in forms for left in "abc ^" for right in "abc $"}
    few = set(sorted(many)[:20])
    counted = _occurrences(texts, many)   # one pass over all windows
    assert _occurrences(texts, few) == {k: counted[k] for k in few}  # one regex per key
    for (e, ctx), n in counted.items():
        left, _, right = ctx.partition("_")
        needle = left.replace("^", "\n") + e + right.replace("$", "\n")
        assert n == sum(len(re.findall(f"(?={re.escape(needle)})", f"\n{t}\n"))
                        for t in texts)


def test_a_book_with_only_corrected_and_ocr_texts_is_mined(tmp_path):
    """An editor-corrected OCR text is the reference of a book with no edited text, so every
    correction teaches the noise model; an edited text is still preferred."""
    from catalog import Lineage

    lh = Lakehouse(str(tmp_path / "lh"))
    rows = []
    for i, (book, variants) in enumerate([("b-edited", ("edited",)),
                                          ("b-corrected", ("corrected",)),
                                          ("b-both", ("corrected", "edited")),
                                          ("b-ocr-only", ())]):
        edited, chapters = _edited(seed=i + 1, chapters=2)
        raw, pages, _ = _typeset(edited)
        rows.append({"book_id": book, "variant": "ocr", "text": raw, "page_offsets": pages})
        for v in variants:
            # the corrected text of b-both differs: it must not be the one aligned
            text = edited if v == "edited" or book != "b-both" else edited.upper()
            rows.append({"book_id": book, "variant": v, "text": text,
                         "chapter_offsets": chapters})
    lh.append("texts", rows, lineage=Lineage(operation="test"))
    report = run_mine(lh, config=MineConfig())
    assert report.books == 3
    al = {r["book_id"]: r for r in lh.read("alignments").to_pylist()}
    assert {b: r["reference"] for b, r in al.items()} == {
        "b-edited": "edited", "b-corrected": "corrected", "b-both": "edited"}
    assert al["b-corrected"]["raw_variant"] == "ocr"
    assert al["b-corrected"]["body_cer"] < 0.1 and al["b-both"]["body_cer"] < 0.1
    assert lh.read("artifacts").num_rows > 0
