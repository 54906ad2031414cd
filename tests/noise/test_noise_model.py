"""The noise model and variant generation: determinism, structure at the mined rates."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from catalog import ConfigError
from noise.generate import (
    BookMeta,
    NoiseConfig,
    book_seed,
    noisy_text,
    typeset,
    uniform_noise,
)
from noise.model import CharNoise, Confusion, NoiseModel, PageLayout, context_class

FRONT = ("{title}\n\nby {author}\n\nCopyright (c) {year} by {author}\nAll rights reserved.\n\n"
         "ISBN {isbn}\n\nPrinted in the United States of America")
META = BookMeta("9781032691947", "The Forty-Niners", "Stewart Edward White")


def _book(n_paragraphs: int = 400, seed: int = 7) -> tuple[str, list[int]]:
    """A multi-chapter edited book of real-looking prose (words drawn from a fixed list)."""
    words = re.findall(r"\S+", "the overland migration attracted more hardy and experienced "
                       "pioneers also those whose assets lay in cattle farm equipment rather "
                       "than money majority came from western parts of United States therefore "
                       "comprised men who had already some experience pioneering")
    rng = np.random.default_rng(seed)
    parts, offsets, pos = [], [], 0
    for i in range(n_paragraphs):
        if i % 40 == 0:
            offsets.append(pos)
            head = f"Chapter {i // 40 + 1}"
            parts.append(head)
            pos += len(head) + 2
        par = " ".join(words[j] for j in rng.integers(0, len(words), 120)).capitalize() + "."
        parts.append(par)
        pos += len(par) + 2
    return "\n\n".join(parts), offsets


def _model(levels=(0.01, 0.02, 0.04), **layout) -> NoiseModel:
    lay = dict(line_width=90, lines_per_page=40, hyphenation=0.05, blank_line=0.1,
               paragraph_joined=0.05, front_matter=((FRONT, 1.0),),
               headers=(("even", "{author}", 0.9), ("odd", "{TITLE}", 0.9)),
               page_numbers=(("bottom", "{n}", 0.5, 0),))
    lay.update(layout)
    conf = [Confusion("e", "é", 0.002), Confusion(" ", "", 0.01, "alone"),
            Confusion(".", ",", 0.02), Confusion("rn", "m", 0.05),
            Confusion("l", "1", 0.01, "word-start"), Confusion("", "'", 0.0005),
            Confusion("the", "tbe", 0.002)]
    return NoiseModel(PageLayout(**lay), CharNoise(conf), tuple(levels))


def test_same_seed_same_bytes_other_seed_other_text():
    text, chapters = _book()
    model = _model()
    a = noisy_text(text, model=model, meta=META, seed=3, chapter_offsets=chapters)
    b = noisy_text(text, model=model, meta=META, seed=3, chapter_offsets=chapters)
    c = noisy_text(text, model=model, meta=META, seed=4, chapter_offsets=chapters)
    assert a.text.encode() == b.text.encode()
    assert (a.page_offsets, a.chapter_offsets) == (b.page_offsets, b.chapter_offsets)
    assert a.text != c.text
    # the chunk size changes how work is cut, not the random stream's use per character
    # class... but it must stay deterministic for a given chunk size
    d = noisy_text(text, model=model, meta=META, seed=3, chapter_offsets=chapters,
                   chunk_chars=5000)
    e = noisy_text(text, model=model, meta=META, seed=3, chapter_offsets=chapters,
                   chunk_chars=5000)
    assert d.text == e.text


def test_book_seed_is_stable_across_processes():
    # a fixed value: Python's salted hash() would change between interpreter runs
    assert book_seed(0, "9781032691947") == book_seed(0, "9781032691947")
    assert book_seed(0, "9781032691947") != book_seed(1, "9781032691947")
    import subprocess
    import sys

    code = ("from noise.generate import book_seed; "
            "print(book_seed(5, '9781032691947'))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
                           cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert int(other.stdout) == book_seed(5, "9781032691947")


def test_structure_at_the_configured_rates():
    text, chapters = _book(600)
    model = _model(levels=(0.0,))  # no character noise: structure only
    out = noisy_text(text, model=model, meta=META, seed=11, chapter_offsets=chapters)
    lay = model.layout
    # title/copyright page first
    assert re.match(r"The Forty-Niners\n\n?by Stewart Edward White\n\n?Copyright \(c\) 1[89]",
                    out.text)
    assert "ISBN 978-1-0326-9194-7" in out.text[:300]
    pages = [out.text[a:b] for a, b in zip(out.page_offsets, [*out.page_offsets[1:], None],
                                           strict=True)]
    body = pages[1:]
    # pages hold lines_per_page printed lines (the last may hold fewer)
    furniture = (META.author, META.title.upper())
    printed = [len([ln for ln in p.split("\n") if ln and not ln.isdigit()
                    and ln not in furniture]) for p in body]
    assert len(body) > 20 and set(printed[:-1]) <= {lay.lines_per_page}
    # running headers: even pages the author, odd pages the title in capitals, ~90% read
    heads = [p.split("\n", 1)[0] for p in body]
    hit = [h in (META.author, META.title.upper()) for h in heads]
    assert 0.75 <= np.mean(hit) <= 1.0
    for i, (h, p) in enumerate(zip(heads, body, strict=True)):
        if h == META.author:
            assert (i + 2) % 2 == 0, (i, p[:50])
    # page numbers at the bottom: the page's own number, about half the pages
    numbered = [p.rstrip().rsplit("\n", 1)[-1] == str(i + 2) for i, p in enumerate(body[:-1])]
    assert 0.3 <= np.mean(numbered) <= 0.7
    # lines are at most line_width (+1 for a hyphen) and most are close to it
    lines = [ln for p in body for ln in p.split("\n")
             if ln and ln not in (META.author, META.title.upper()) and not ln.isdigit()]
    assert max(len(ln) for ln in lines) <= lay.line_width + 1
    # hyphenated line ends at the configured share of line ends inside paragraphs
    ends = [ln for ln in lines if len(ln) > lay.line_width * 0.6]
    hyph = np.mean([bool(re.search(r"[a-z]-$", ln)) for ln in ends])
    assert abs(hyph - lay.hyphenation) < 0.02, hyph
    # removing the furniture and joining lines gives the edited text back exactly
    rebuilt = []
    for i, p in enumerate(body):
        ls = p.split("\n")
        if ls and ls[0] in (META.author, META.title.upper()):
            ls = ls[2:]
        while ls and (ls[-1] == "" or ls[-1] == str(i + 2)):
            ls.pop()
        rebuilt.extend(ls)
    joined = re.sub(r"-\n+(?=[a-z])", "", "\n".join(rebuilt))
    assert re.sub(r"\s+", " ", joined).strip() == re.sub(r"\s+", " ", text).strip()
    # chapter offsets point at the chapter headings in the variant
    assert [out.text[o:].split("\n", 1)[0] for o in out.chapter_offsets] == \
        [f"Chapter {i + 1}" for i in range(len(chapters))]


def test_character_noise_matches_the_level_and_the_confusions():
    from rapidfuzz.distance import Levenshtein

    text, _ = _book(200)
    chars = _model().chars
    rng = np.random.default_rng(5)
    noisy, _ = chars.noise(text, rate=0.02, rng=rng)
    cer = Levenshtein.distance(text, noisy) / len(text)
    assert 0.015 < cer < 0.025, cer
    # "rn" -> "m" and "the" -> "tbe" happen; a word-start-only confusion never mid-word
    assert "tbe" in noisy
    ops = Levenshtein.opcodes(text, noisy)
    for tag, i1, i2, j1, j2 in ops:
        if tag == "replace" and noisy[j1:j2] == "1" and text[i1:i2] == "l":
            assert i1 == 0 or not text[i1 - 1].isalnum()


def test_offsets_shift_with_the_edits():
    chars = CharNoise([Confusion("a", "xyz", 0.5), Confusion("b", "", 0.5)])
    text = "ab " * 2000 + "MARK" + " ab" * 100
    mark = text.index("MARK")
    noisy, (moved,) = chars.noise(text, rate=0.3, rng=np.random.default_rng(1),
                                  offsets=[mark])
    assert noisy[moved:moved + 4] == "MARK" and noisy != text


def test_uniform_baseline_hits_its_cer():
    from rapidfuzz.distance import Levenshtein

    text, _ = _book(100)
    noisy = uniform_noise(text, cer=0.05, rng=np.random.default_rng(0))
    assert 0.035 < Levenshtein.distance(text, noisy) / len(text) < 0.055


def test_typeset_chunks_at_paragraph_ends():
    text, chapters = _book(300)
    model = _model()
    chunks = list(typeset(text, layout=model.layout, meta=META, rng=np.random.default_rng(0),
                          chapter_offsets=chapters, chunk_chars=10_000))
    assert len(chunks) > 5
    assert all(c.startswith("\n") for c, _, _ in chunks[1:])
    # a chunk ends at the first paragraph break after chunk_chars (~900-character paragraphs)
    assert max(len(c) for c, _, _ in chunks) < 10_000 + 4 * 900


def test_config_and_model_validation():
    with pytest.raises(ConfigError, match="--recipe"):
        NoiseConfig(recipe="fancy")
    with pytest.raises(ConfigError, match="--per-book"):
        NoiseConfig(per_book=0)
    with pytest.raises(ConfigError, match="--cer-scale"):
        NoiseConfig(cer_scale=-1)
    with pytest.raises(ConfigError, match="changes nothing"):
        Confusion("a", "a", 0.1)
    with pytest.raises(ConfigError, match="line_width"):
        PageLayout(line_width=3)
    with pytest.raises(ConfigError, match="corpus mine"):
        NoiseModel(PageLayout(), CharNoise([]), ())
    assert context_class("a_b") == 3 and context_class(" _b") == 1
    assert context_class("") is None and context_class("word-end") == 2


def test_books_are_ids_or_shell_patterns():
    from catalog import CorpusError
    from noise.generate import select_books

    ids = ["clear-10", "clear-11", "clear-2", "noisy-1", "odd[1]"]
    assert select_books(ids, ["clear-1*"]) == {"clear-10", "clear-11"}
    assert select_books(ids, ["clear-2", "noisy-?"]) == {"clear-2", "noisy-1"}
    assert select_books(ids, ["odd[1]"]) == {"odd[1]"}  # an id is a pattern matching itself
    # a pattern matching nothing is an error, as an unknown id always was
    with pytest.raises(CorpusError, match=r"No edited text for book\(s\) \['nope\*'\]"):
        select_books(ids, ["clear-1*", "nope*"])


def test_exact_contexts_fire_only_in_their_context():
    # "rn" -> "m" mined between "o" and "i" ("morning"); never in "turned" or "corner"
    chars = CharNoise([Confusion("rn", "m", 0.5, "o_i"), Confusion("", "'", 0.5, "^_T")])
    text = "\n".join(["morning turned corner"] * 300 + ["The end"] * 50)
    noisy, _ = chars.noise(text, rate=0.03, rng=np.random.default_rng(2))
    assert "moming" in noisy and "tumed" not in noisy and "comer" not in noisy
    assert "'The end" in noisy and "'morning" not in noisy


# ---- with patterns mined from real scans ---------------------------------------------------

@pytest.fixture(scope="module")
def mined(small_pairs, tmp_path_factory):
    """A copy of the OCR'd sample share (so other tests' lakehouse stays untouched), mined."""
    import shutil

    from catalog import Lakehouse
    from noise.mine import MineConfig, run_mine

    root = tmp_path_factory.mktemp("noise_mined") / "lakehouse"
    shutil.copytree(small_pairs.root, root)
    lh = Lakehouse(str(root))
    run_mine(lh, config=MineConfig())
    return lh


def _long_book(lh) -> tuple[str, list[int], BookMeta]:
    """Every edited text of the sample share as the chapters of one long book."""
    import pyarrow.compute as pc

    texts = lh.read("texts", columns=["book_id", "variant", "text"],
                    filter=pc.field("variant") == "edited").to_pylist()
    parts, offsets, pos = [], [], 0
    for i, t in enumerate(sorted(texts, key=lambda t: t["book_id"]) * 3):
        body = re.sub(r"^Chapter \d+\s*", "", t["text"].strip())
        block = f"Chapter {i + 1}\n\n{body}"
        offsets.append(pos)
        parts.append(block)
        pos += len(block) + 2
    return "\n\n".join(parts), offsets, META


def test_variant_of_mined_model_has_the_structure_at_mined_rates(mined):
    from noise.generate import load_noise_model

    model = load_noise_model(mined)
    lay = model.layout
    assert lay.front_matter and lay.headers and lay.headings
    text, chapters, meta = _long_book(mined)
    n_books = 30
    outs = [noisy_text(text, model=model, meta=meta, seed=s, chapter_offsets=chapters)
            for s in range(n_books)]
    # title page: drawn per book at the mined rate
    front = np.mean([o.text.startswith(meta.title) for o in outs])
    want = sum(p for _, p in lay.front_matter)
    assert abs(front - want) <= 0.2, (front, want)
    # running headers: each page parity at its mined rate
    for parity, template, p in lay.headers:
        line = template.format(author=meta.author, AUTHOR=meta.author.upper(),
                               title=meta.title, TITLE=meta.title.upper())
        got = []
        for o in outs:
            starts = [*o.page_offsets, len(o.text)]
            first_body = 2 if o.text.startswith(meta.title) else 1
            for no, (a, b) in enumerate(itertools.pairwise(starts), start=1):
                if no >= first_body and (no % 2 == 0) == (parity == "even"):
                    # OCR noise may touch a header: compare its first line loosely
                    head = o.text[a:b].split("\n", 1)[0]
                    same = sum(x == y for x, y in zip(head, line, strict=False))
                    got.append(same >= 0.8 * len(line))
        assert got and abs(np.mean(got) - p) <= 0.12, (template, np.mean(got), p)
    # pages hold the mined number of lines; hyphenated line ends at the mined rate
    o = outs[0]
    starts = [*o.page_offsets, len(o.text)]
    body_pages = [o.text[a:b] for a, b in itertools.pairwise(starts[1:-1])][:-1]
    for page in body_pages:
        lines = [ln for ln in page.split("\n") if ln.strip()]
        assert lay.lines_per_page <= len(lines) <= lay.lines_per_page + 4
    ends = [ln for o in outs[:5] for ln in o.text.split("\n") if len(ln) >= lay.line_width - 15]
    hyph = np.mean([ln.endswith("-") for ln in ends])
    assert abs(hyph - lay.hyphenation) <= 0.02 + lay.hyphenation * 0.5, (hyph, lay.hyphenation)
    # headings as the scans print them
    assert "CHAPTER" in outs[0].text
    # page and chapter offsets point into the variant
    assert all(0 <= x < len(o.text) for x in o.page_offsets + o.chapter_offsets)


def test_run_noise_writes_variants_with_lineage_and_is_deterministic(mined):
    import pyarrow.compute as pc

    from catalog.rules import noisy_variant
    from noise.generate import NoiseConfig, run_noise

    av = mined.version("artifacts")
    r = run_noise(mined, config=NoiseConfig(seed=3, per_book=2, workers=2))
    names = {noisy_variant("mined", av, 3), noisy_variant("mined", av, 4)}
    assert set(r.variants) == names and names == {f"noisy/mined-v{av}/3", f"noisy/mined-v{av}/4"}
    texts = mined.read("texts").to_pylist()
    edited = {t["book_id"]: t for t in texts if t["variant"] == "edited"}
    noisy = {(t["book_id"], t["variant"]): t for t in texts if t["variant"] in names}
    assert len(noisy) == 2 * len(edited) == r.rows
    v = mined.version("texts")
    for (book, _), t in noisy.items():
        assert t["derived_from"].endswith(f"{book}/edited") and t["n_chars"] == len(t["text"])
        assert t["page_offsets"] and t["page_offsets"][0] == 0
        assert t["text"] != edited[book]["text"]
    c = mined.history("texts", limit=1)[0]
    assert c.operation == "noise"
    assert set(c.inputs) == {"texts", "books", "artifacts", "alignments"}
    # the same seed again, one worker: byte-identical texts
    one = sorted(edited)[:3]
    run_noise(mined, config=NoiseConfig(seed=3, workers=1, books=tuple(one)))
    again = {t["book_id"]: t["text"] for t in mined.read(
        "texts", filter=pc.field("variant") == f"noisy/mined-v{av}/3").to_pylist()}
    assert all(again[b].encode() == noisy[(b, f"noisy/mined-v{av}/3")]["text"].encode()
               for b in one)
    # the rerun replaced its rows (merge on the keys), it did not add copies
    assert mined.read("texts", filter=pc.field("variant") == f"noisy/mined-v{av}/3"
                      ).num_rows == len(edited)
    assert mined.history("texts", limit=1)[0].operation == "noise"
    assert mined.version("texts") > v


def test_run_noise_selects_books_by_pattern(mined):
    import pyarrow.compute as pc

    from noise.generate import NoiseConfig, run_noise

    edited = sorted(t["book_id"] for t in mined.read(
        "texts", columns=["book_id", "variant"]).to_pylist() if t["variant"] == "edited")
    pattern = edited[0][:-1] + "*"
    chosen = [b for b in edited if b.startswith(edited[0][:-1])]
    r = run_noise(mined, config=NoiseConfig(recipe="uniform", seed=21, workers=1,
                                            books=(pattern,)))
    assert r.books == len(chosen) == r.rows
    written = mined.read("texts", filter=pc.field("variant") == r.variants[0]).to_pylist()
    assert sorted(t["book_id"] for t in written) == chosen


def test_batched_variants_equal_one_by_one():
    """A book's variant does not depend on the batch it is generated in."""
    from noise.generate import BookTask, noisy_texts

    model = _model()
    long_text, long_chapters = _book(60)
    tasks = [BookTask(_book(n, seed=n)[0], BookMeta(f"97800000000{n:02d}", "T", "A"), 5)
             for n in (1, 3, 8)]
    tasks.insert(1, BookTask(long_text, META, 5, long_chapters))
    alone = [noisy_text(t.text, model=model, meta=t.meta, seed=t.seed,
                        chapter_offsets=t.chapter_offsets, chunk_chars=20_000)
             for t in tasks]
    together = noisy_texts(tasks, model=model, chunk_chars=20_000)
    assert together == alone
    assert noisy_texts(tasks[2:], model=model, chunk_chars=20_000) == alone[2:]


def test_no_page_number_on_the_title_page():
    # a number printed as page - 1 (the title page not counted): the first body page is 1
    model = _model(levels=(0.0,), page_numbers=(("bottom", "- {n} -", 1.0, -1),),
                   lines_per_page=5)
    text, chapters = _book(6)
    out = noisy_text(text, model=model, meta=META, seed=1, chapter_offsets=chapters)
    pages = [out.text[a:b] for a, b in itertools.pairwise([*out.page_offsets, len(out.text)])]
    assert "- 0 -" not in out.text and "- " not in pages[0]
    assert pages[1].rstrip().endswith("- 1 -") and pages[2].rstrip().endswith("- 2 -")
