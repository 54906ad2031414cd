"""The book-length aligner: exact CER/WER (rapidfuzz's Levenshtein is the reference), valid
edit scripts, real OCR, long texts, the HTML diff."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from catalog import ConfigError
from noise.align import DIRECT_CELLS, KINDS, Alignment, align, apply_ops, to_html, top_edits

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
NOISE = "abcdeilmnorstu1|.,;:'’-— \n"

words = st.text(alphabet=LETTERS + ".,;'\"-", min_size=1, max_size=9)
seps = st.sampled_from([" ", " ", " ", " ", "\n", "\n\n", "  "])


@st.composite
def prose(draw, max_words: int = 120, word: st.SearchStrategy[str] = words,
          min_vocab: int = 8) -> str:
    """Text made of words from a small vocabulary (so words repeat, as in prose; at least
    eight distinct words unless ``min_vocab`` says otherwise)."""
    vocab = draw(st.lists(word, min_size=min_vocab, max_size=40, unique=True))
    n = draw(st.integers(0, max_words))
    out = []
    for _ in range(n):
        out.append(draw(st.sampled_from(vocab)))
        out.append(draw(seps))
    return "".join(out).strip()


@st.composite
def damaged(draw, text: str, max_rate: float = 0.15) -> str:
    """``text`` with random substitutions, insertions and deletions (OCR-like characters,
    spaces, line breaks, hyphens) at up to ``max_rate`` edits per character."""
    chars = list(text)
    n_edits = draw(st.integers(0, max(1, int(len(text) * max_rate))))
    for _ in range(n_edits):
        kind = draw(st.sampled_from(["sub", "ins", "del", "break"]))
        pos = draw(st.integers(0, len(chars)))
        if kind == "ins" or not chars or pos == len(chars):
            chars.insert(pos, draw(st.sampled_from(NOISE)))
        elif kind == "sub":
            chars[pos] = draw(st.sampled_from(NOISE))
        elif kind == "del":
            del chars[pos]
        else:  # a line break, hyphenated or not
            chars.insert(pos, draw(st.sampled_from(["-\n", "\n", "\n\n"])))
    return "".join(chars)


@st.composite
def pairs(draw) -> tuple[str, str]:
    ref = draw(prose())
    return ref, draw(damaged(ref))


@st.composite
def repetitive_pairs(draw) -> tuple[str, str]:
    """Damaged text made of three or more words of one or two letters (``;;;;``, ``baab``):
    runs of one word and near-copies everywhere, where unique grams are often misplaced."""
    letters = draw(st.sampled_from([";", "ab", "a;"]))
    ref = draw(prose(word=st.text(alphabet=letters, min_size=1, max_size=9), min_vocab=3))
    return ref, draw(damaged(ref))


def _exact_word_distance(ref: str, hyp: str) -> int:
    return Levenshtein.distance(ref.split(), hyp.split())


def _check(ref: str, hyp: str, a: Alignment) -> None:
    """Everything an alignment promises, against rapidfuzz's exact values."""
    exact = Levenshtein.distance(ref, hyp)
    assert a.distance == exact
    assert a.ref_len == len(ref) and a.hyp_len == len(hyp)
    assert a.cer == pytest.approx(exact / len(ref) if ref else float(exact))
    wd = _exact_word_distance(ref, hyp)
    assert a.word_distance == wd and a.ref_words == len(ref.split())
    assert a.wer == pytest.approx(wd / len(ref.split()) if ref.split() else float(wd))
    assert len(a.ops) == a.distance == sum(a.counts.values())
    assert a.counts == {k: sum(op.kind == k for op in a.ops) for k in KINDS}
    # a valid transcript, in text order, each op of the right shape
    assert apply_ops(ref, hyp, a.ops) == hyp
    for prev, op in zip(a.ops, a.ops[1:], strict=False):
        assert (prev.ref_end, prev.hyp_end) <= (op.ref_start, op.hyp_start)
    for op in a.ops:
        assert op.kind in KINDS
        assert op.ref_end - op.ref_start == (op.kind != "insert")
        assert op.hyp_end - op.hyp_start == (op.kind != "delete")
        if op.kind == "replace":
            assert ref[op.ref_start] != hyp[op.hyp_start]
    # blocks tile both texts; equal blocks really are equal
    blocks = list(a.blocks())
    assert "".join(ref[b.ref_start:b.ref_end] for b in blocks) == ref
    assert "".join(hyp[b.hyp_start:b.hyp_end] for b in blocks) == hyp
    assert all(ref[b.ref_start:b.ref_end] == hyp[b.hyp_start:b.hyp_end]
               for b in blocks if b.tag == "equal")


#: Repetitive text where an anchor unique in both texts lay off every optimal alignment. The
#: first two were found by the property test below in CI: word distance 6 instead of 3 (a
#: sparse probe, trimmed, anchored the middle of a run of one word a word off its place) and
#: distance 41 instead of 3 (a chance word trigram 18 characters off the diagonal). The other
#: two by the same test with words of one or two letters (three or more distinct words): a
#: sparse probe 96 characters off the diagonal with a trigram on its diagonal next to it (a
#: detour through two anchors, each consistent with the other), and a trigram 120 characters
#: off the diagonal.
REPETITIVE = [
    pytest.param(
        ';;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;'
        ';;; ;;;; ; ; ; ; ; ; ; ; ; ;;;;;;;; ;;;; ;;;; ;;;; ;;;; ;;;;;;;;; ;;;;;;;;; '
        ';;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ; ; ; ; ; ;;;; ;;;; ;;;;;;'
        ';; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;'
        ';;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;'
        ';; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;'
        '; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;;'
        ' ;;;; ;;;; ;;;; ;;;; ;;;; ;;;;',
        'a;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;'
        ';; ;;;; ; ; ; ; ; ; ; ; ; ;;;;;;;; ;;;; ;;;; ;;;; ;;;; ;;;;;;;;; ;;;;;;;;; ;'
        ';;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ; ; ; ; ; ;;;; ;;;; ;;;;;;;'
        '; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;; ;;;;;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;'
        '; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;;'
        ' ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; '
        ';;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;'
        ';;; ;;;; ;;;; ;;;; ;;;; ;;;;',
        id="ci-word-distance-6-for-3"),
    pytest.param(
        '; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; '
        '; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;'
        '; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;;'
        ' ;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ; ; ; ; ;'
        ' ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ;',
        'a; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ;'
        ' ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;;'
        ' ;;;; ;;;; ;;;; ;;;; ;;;; ;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; '
        ';;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;; ;;;;;;;;; ;;;;;;;;; ;;;;;;;;; ; ; ; ; ; ;'
        ' ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ; ;',
        id="ci-distance-41-for-3"),
    pytest.param(
        ';;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;'
        ';;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ; ; ; ; ; ; ; ; ; ; ; ; ;;;;;;;;; ;;;;;;;;; '
        ';;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n'
        '\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;; ; ; ;;;;;;;; ; ;;;;;;;;; ;;;;;;;; ;;;;;;;; '
        ';;;;;;;; ;;;;;;;; ;\n\n;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n; ; ;;;;;;;;; ;;;;;;;;; ;;;;;;'
        ';; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;;',
        'a ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;'
        ';;;;;; ;;;;;;;; ;;;;;;;; ; ; ; ; ; ; ; ; ; ; ; ; ;;;;;;;;; ;;;;;;;;; ;;;;;;;'
        ';;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;;;;\n\n;;;;;;'
        ';;;\n\n;;;;;;;;;\n\n;;;;;;;;; ; ; ;;;;;;;;; ;;;;;;;;; ;;;;;;;; ;;;;;;; ;;;;;;;; '
        ';;;;;;;; ;\n\n;\n\n;;;;;;;;;\n;;;;;;;;;\n\n; ; ;;;;;;a;; ;;;;;;;;; ;;;;;;;; ;;;;;;;'
        '; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;; ;;;;;;;;',
        id="semicolons-distance-183-for-12"),
    pytest.param(
        'baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaa'
        'b baaab baaab baaab baaab baaab baaab\n\nbaaab\n\nbaaab\n\nbaaab\n\na\n\na\n\na\n\naaaaaaa'
        'ab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab aaaaaaa'
        'ab aaaaaaaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baa'
        'ab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab b'
        'aaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab'
        ' baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baa'
        'ab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab b'
        'aaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab'
        ' baaab baaab baaab baaab baaab baaab',
        'abaaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baa'
        'ab baaab baaab baaab baaab baaab baaab\n\nbaaab\n\nbaaab\n\nbaaab\n\na\n\na\n\na\n\naaaaaa'
        'aab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab\n\naaaaaaaab aaaaaa'
        'aab aaaaaaaab baaab baaab baaab aaaab baaab baaab baaab baaab baaab baaab ba'
        'aab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab aaab baaab b'
        'aaab baab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab '
        'baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaa'
        'b baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab ba'
        'aab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab baaab '
        'baaab baaab baaab baaab baaab baaab',
        id="ab-distance-241-for-4"),
]


@pytest.mark.parametrize(("ref", "hyp"), REPETITIVE)
def test_anchored_alignment_is_exact_on_repetitive_text(ref, hyp):
    _check(ref, hyp, align(ref, hyp, direct_cells=0))


def test_long_repetitive_text_is_exact():
    """~26,000 characters of three words ("the", "cat", "a") with OCR-like damage: most
    anchors are misplaced. Everything anchored (direct_cells=0), the checks merge them away;
    on the default path they merge window after window until their budget is spent and the
    whole is aligned exactly. Unchecked anchors had the word distance 66 and 3,323 too high."""
    rng = random.Random(3)
    ref = "".join(rng.choice(["the", "the", "cat", "a"]) + rng.choice("  \n")
                  for _ in range(7_500))
    hyp = _ocr_noise(ref, random.Random(4), rate=0.06)
    for dc in (0, DIRECT_CELLS):
        _check(ref, hyp, align(ref, hyp, direct_cells=dc))


# derandomize: the same examples on every run (and no example database), so a red CI is a
# real regression that reproduces, not a lucky draw; cases found by exploring with more
# examples or other seeds belong in REPETITIVE.
@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_anchored_alignment_is_exact_on_random_prose_with_random_edits(pair):
    ref, hyp = pair
    # direct_cells=0: every window goes through anchoring (sparse probes, word trigrams,
    # words), only the gaps between anchors are aligned by rapidfuzz
    _check(ref, hyp, align(ref, hyp, direct_cells=0))


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(repetitive_pairs())
def test_anchored_alignment_is_exact_on_random_repetitive_text(pair):
    ref, hyp = pair
    _check(ref, hyp, align(ref, hyp, direct_cells=0))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(pairs())
def test_default_alignment_is_exact(pair):
    ref, hyp = pair
    _check(ref, hyp, align(ref, hyp))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(alphabet="ab \n", max_size=120), st.text(alphabet="ab \n", max_size=120))
def test_any_texts_give_a_valid_edit_script(ref, hyp):
    # Two unrelated texts over a tiny alphabet: anchors by chance are the worst case.
    # The ops are still a valid transcript and never claim less than the exact distance;
    # the default (short texts are aligned in one exact step) is exact.
    forced = align(ref, hyp, direct_cells=0)
    assert apply_ops(ref, hyp, forced.ops) == hyp
    assert forced.distance >= Levenshtein.distance(ref, hyp)
    _check(ref, hyp, align(ref, hyp))


def test_counts_and_edge_cases():
    a = align("abc", "abd")
    assert (a.distance, a.counts, a.cer) == (1, {"replace": 1, "insert": 0, "delete": 0}, 1 / 3)
    assert a.ops[0] == ("replace", 2, 3, 2, 3)
    assert align("", "").cer == 0.0 and align("", "xy").distance == 2
    b = align("the cat", "")
    assert b.count("delete") == 7 and b.wer == 1.0
    assert align("one two three", "one too three").wer == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        a.count("substitute")
    with pytest.raises(ConfigError, match="direct_cells"):
        align("a", "b", direct_cells=-1)
    assert json.loads(json.dumps(a.to_dict()))["ops"]["replace"] == 1


def _ocr_noise(text: str, rng: random.Random, rate: float) -> str:
    """OCR-like damage: confusions, stray punctuation, lost characters, a running header
    every ~3,000 characters and hyphenated line ends."""
    conf = {"e": "c", "l": "1", "I": "|", "o": "0", "m": "rn", "h": "b", ",": ".", "'": "’"}
    out, since_header = [], 0
    for c in text:
        r = rng.random()
        if r < rate * 0.5:
            out.append(conf.get(c, rng.choice("aeiou.,")))
        elif r < rate * 0.7:
            out.append(c + rng.choice(" .,'"))
        elif r < rate * 0.9:
            continue
        elif r < rate and c.isalpha():
            out.append(c + "-\n")
        else:
            out.append(c)
        since_header += 1
        if since_header > 3000 and c == " ":
            out.append("\n\nTHE RUNNING HEADER\n\n")
            since_header = 0
    return "".join(out)


@pytest.mark.slow
def test_long_real_text_is_exact(prose_books):
    """~100,000 characters of the development share's edited books (real prose, from
    tests/fixtures) against an OCR-like damaged copy: the default path (sparse probes,
    windows) gives the exact values."""
    ref = "\n\n".join(prose_books["first"])[:100_000]
    assert len(ref) == 100_000
    hyp = _ocr_noise(ref, random.Random(5), rate=0.06)
    a = align(ref, hyp)
    assert a.distance == Levenshtein.distance(ref, hyp)
    assert a.word_distance == _exact_word_distance(ref, hyp)
    assert apply_ops(ref, hyp, a.ops) == hyp
    assert 0.03 < a.cer < 0.09


@pytest.mark.slow
def test_real_ocr_pairs_are_exact(small_pairs):
    """Edited books against their Tesseract OCR (title page, running header, hyphenation,
    real recognition errors), the anchor path forced and not."""
    texts = small_pairs.read("texts").to_pylist()
    by: dict[str, dict[str, str]] = {}
    for t in texts:
        by.setdefault(t["book_id"], {})[t["variant"]] = t["text"]
    pairs_ = [(v["edited"], v["ocr"]) for v in by.values() if {"edited", "ocr"} <= v.keys()]
    assert len(pairs_) == 4
    for ref, hyp in pairs_:
        for dc in (0, 10_000):
            _check(ref, hyp, align(ref, hyp, direct_cells=dc))


def test_html_diff_escapes_and_marks():
    ref = 'Tom & <Jerry> said "hi".\n\nNext paragraph.'
    hyp = 'Tom & <Jcrry> said "hi",\nNext paragraph.'
    a = align(ref, hyp)
    page = to_html(ref, hyp, a, title="<book>")
    assert "<Jerry>" not in page and "&lt;J" in page and "&lt;book&gt;" in page
    assert page.count("<tr>") == 2  # a header row and one row per reference paragraph block
    assert '<span class="r">e</span>' in page or '<span class="r">c</span>' in page
    assert "CER" in page and "WER" in page


@pytest.fixture(params=["recorded", pytest.param("dev", marks=pytest.mark.acceptance)])
def multi_page_ocr(request) -> list[tuple[str, str]]:
    """(edited, OCR) of three development-share books with multi-page scans: recorded in
    tests/fixtures; in `make acceptance`, OCR'd live from the development share."""
    if request.param == "recorded":
        return [(p["edited"], p["raw"]) for p in request.getfixturevalue("ocr_pairs")]
    return _pairs(request.getfixturevalue("dev_pairs"))


def _pairs(lh) -> list[tuple[str, str]]:
    by: dict[str, dict[str, str]] = {}
    for t in lh.read("texts").to_pylist():
        by.setdefault(t["book_id"], {})[t["variant"]] = t["text"]
    return [(v["edited"], v["ocr"]) for v in by.values() if {"edited", "ocr"} <= v.keys()]


@pytest.mark.slow
def test_real_ocr_of_several_books_joined_is_exact(small_pairs, multi_page_ocr):
    """Real Tesseract output of 7 books joined into one document (title pages, running
    headers and page numbers between the texts, as whole articles of a newspaper issue):
    long enough for the sparse-probe path, exact against rapidfuzz on the whole."""
    pairs = _pairs(small_pairs) + multi_page_ocr
    assert len(pairs) == 7
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    ref, hyp = "\n\n".join(refs), "\n\n".join(hyps)
    assert len(ref) > 30_000 and len(ref) * len(hyp) > 100 * 4_000_000
    for dc in (4_000_000, 0):
        a = align(ref, hyp, direct_cells=dc)
        assert a.distance == Levenshtein.distance(ref, hyp)
        assert a.word_distance == _exact_word_distance(ref, hyp)
        assert apply_ops(ref, hyp, a.ops) == hyp


def test_unrelated_texts_fall_back_to_exact(prose_books):
    """Two different books: any anchors are chance matches. The anchored result would cost
    more than replacing everything, so the window is aligned exactly instead."""
    ref = "\n\n".join(prose_books["first"])[:20_000]
    hyp = "\n\n".join(prose_books["second"])[:20_000]
    assert len(ref) == len(hyp) == 20_000
    a = align(ref, hyp, direct_cells=10_000)
    assert a.distance == Levenshtein.distance(ref, hyp) < 20_000
    assert a.word_distance == _exact_word_distance(ref, hyp)
    assert apply_ops(ref, hyp, a.ops) == hyp


def test_top_edits_counts_short_edits_most_frequent_first():
    ref = "In the modern morning, the barn burned. A whole lost sentence was here."
    hyp = "In tbe modem moming, the bam burned. A"
    a = align(ref, hyp)
    # the lost sentence (30 characters) is no short edit; "rn" -> "m" is the most frequent
    assert top_edits(ref, hyp, a, 10) == [
        {"reference": "rn", "hypothesis": "m", "count": 3},
        {"reference": "h", "hypothesis": "b", "count": 1}]
    assert top_edits(ref, hyp, a, 1) == [{"reference": "rn", "hypothesis": "m", "count": 3}]
    assert top_edits(ref, hyp, a, 0) == []
    assert top_edits(ref, ref, align(ref, ref), 5) == []


def test_normalize():
    from noise.align import normalize

    assert normalize("Cafe\u0301  au\n\nLAIT", ["nfc"]) == "Caf\u00e9  au\n\nLAIT"
    assert normalize("Cafe\u0301  au\n\nLAIT", ["nfc", "whitespace", "case"]) == "caf\u00e9 au lait"
    with pytest.raises(ConfigError, match="unknown normalization"):
        normalize("x", ["lower"])
