"""Book-length alignment of a reference (edited) text and a hypothesis (raw, OCR) text.

A whole-book edit distance is quadratic: rapidfuzz needs ~10 s for half a million
characters (P3 in BENCHMARKS.md). Books differ from their scans only locally, so
:func:`align` splits the problem first:

1. **Sparse probes.** Every ~250 characters (``isqrt(direct_cells) / 8``) a 24-character
   probe of the reference is looked up (``str.find``) in the hypothesis near the diagonal of
   the last anchor; a probe found exactly once there, and unique around its place in the
   reference, anchors. A probe that misses (an edit inside it) is retried a little further
   on, with a slack that doubles after 16 misses, so a lost page or a long insertion is
   crossed.
2. **Exact windows.** The windows between anchors (about 250 x 250 characters, at most
   ``direct_cells`` cells of the dynamic-programming matrix) get their exact edit operations
   from rapidfuzz. They are small because checking an anchor (step 4) aligns the two windows
   around it as one, at a cost that grows with their length times their edits: with windows
   of ~1,000 characters the checks added a third to the time at book length, with ~250 they
   cost about what the smaller windows save. A window still too long is anchored again: word
   trigrams (spaces included) unique in both halves of the window, paired, the longest chain
   in the same order in both (longest increasing subsequence) kept, touching pairs on one
   diagonal merged; then single words, then character q-grams; only if nothing anchors is it
   aligned exactly as a whole (rapidfuzz with ``score_hint``).
3. Every anchored block gives ``trim`` characters back to its neighbouring windows, so the
   exact step decides how the text next to an edit aligns. An anchored window whose edits
   cost more than replacing it whole had chance anchors (unrelated text) and is aligned
   exactly instead.
4. **Verified anchors.** A gram unique in both texts can still lie off every optimal
   alignment: in repetitive text (a run of one character or word, a repeated line) it may
   pair a place with a copy a few symbols away, or a chance probe or trigram may pair text
   far off the diagonal, and the windows around it then pay for a detour. So every anchor
   is checked: the two windows around it are aligned again as one, with their summed cost
   as cutoff (rapidfuzz then computes only the band that could do better), and where that
   is cheaper the anchor is dropped and the merged window, exact, replaces them. On text
   where most anchors are misplaced the checks stop after as many cells as one exact
   alignment of the whole texts takes, and that alignment replaces them.

Texts with at most ``direct_cells`` cells are aligned exactly in one step. On longer texts
the distance equals the exact Levenshtein distance whenever the anchors lie on an optimal
alignment, which holds for text with local damage (OCR errors, inserted headers, line
breaks, lost or inserted passages); step 4 removes every anchor that a cheaper alignment of
the windows around it avoids, so a wrong anchor costs time, not exactness. What it does not
prove absent is a run of wrong anchors each consistent with its wrong neighbours (see
:meth:`_Differ._verify`). The property tests in ``tests/noise/test_align.py`` check
equality with rapidfuzz on random prose with random edits and on repetitive text, with the
anchor path forced, and on real OCR. Text that is *moved* may get a valid but longer edit
script.

WER is the word-level edit distance over the reference's whitespace-separated words,
computed the same way with every distinct word coded as one symbol.
"""

from __future__ import annotations

import html
import re
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from math import isqrt
from typing import NamedTuple

from rapidfuzz.distance import Levenshtein

from catalog import ConfigError

WORD = re.compile(r"\S+")

#: Windows up to this many DP cells are aligned exactly in one rapidfuzz call
#: (~2,000 x 2,000 characters: well under a millisecond and a 0.5 MB bit matrix).
DIRECT_CELLS = 4_000_000
#: Characters trimmed from each end of an anchored block (see the module docstring).
TRIM = 4
#: The same for word-level alignment (in words).
WORD_TRIM = 2
#: Length of the probes that place sparse anchors on long texts (characters, words).
CHAR_PROBE = 24
WORD_PROBE = 6
#: Anchor levels for characters: ("w", n) word n-grams, ("c", q) character q-grams, and the
#: window size (DP cells) below which a level is not tried and the window is aligned exactly:
#: a q-gram that is unique in a small window is too often unique by chance.
CHAR_LEVELS: tuple[tuple[str, int, int], ...] = (
    ("w", 3, 0), ("w", 1, 0), ("c", 12, 1_000_000), ("c", 6, 1_000_000))
#: Anchor levels for word-coded strings (one character per word): word n-grams.
WORD_LEVELS: tuple[tuple[str, int, int], ...] = (
    ("c", 3, 0), ("c", 2, 10_000), ("c", 1, 10_000))

KINDS = ("replace", "insert", "delete")
_CODE = {"replace": 0, "insert": 1, "delete": 2}


class EditOp(NamedTuple):
    """One character edit turning the reference into the hypothesis.

    ``replace``: ``reference[ref_start:ref_end]`` (one character) became
    ``hypothesis[hyp_start:hyp_end]``; ``delete``: the reference character is missing from
    the hypothesis (``hyp_start == hyp_end`` is where it would be); ``insert``: the
    hypothesis character has no reference counterpart (``ref_start == ref_end`` is where it
    was inserted). The ops of an :class:`Alignment` are sorted by position.
    """

    kind: str
    ref_start: int
    ref_end: int
    hyp_start: int
    hyp_end: int


class Block(NamedTuple):
    """A maximal run of the alignment: ``equal`` text, or one contiguous edited region
    (``replace`` when both sides are non-empty, else ``insert`` or ``delete``)."""

    tag: str
    ref_start: int
    ref_end: int
    hyp_start: int
    hyp_end: int


@dataclass(frozen=True)
class Alignment:
    """The character alignment of a reference and a hypothesis, with CER and WER.

    Attributes:
        distance: Character edit distance (number of ops).
        ref_len: Characters in the reference.
        hyp_len: Characters in the hypothesis.
        cer: ``distance / ref_len`` (``distance`` itself when the reference is empty).
        word_distance: Word-level edit distance (whitespace-separated words).
        ref_words: Words in the reference.
        hyp_words: Words in the hypothesis.
        wer: ``word_distance / ref_words`` (``word_distance`` when there are no words).
        n_replace: Number of ``replace`` ops (substitutions).
        n_insert: Number of ``insert`` ops.
        n_delete: Number of ``delete`` ops.
        ops: The character edit operations, sorted by position (:class:`EditOp`).
    """

    distance: int
    ref_len: int
    hyp_len: int
    cer: float
    word_distance: int
    ref_words: int
    hyp_words: int
    wer: float
    n_replace: int
    n_insert: int
    n_delete: int
    ops: Sequence[EditOp]

    def count(self, kind: str) -> int:
        """Number of ops of ``kind`` (``replace``, ``insert`` or ``delete``)."""
        if kind not in _CODE:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return {"replace": self.n_replace, "insert": self.n_insert,
                "delete": self.n_delete}[kind]

    @property
    def counts(self) -> dict[str, int]:
        """Ops by kind: ``{"replace": n, "insert": n, "delete": n}``."""
        return {k: self.count(k) for k in KINDS}

    def blocks(self) -> Iterator[Block]:
        """The whole alignment as consecutive :class:`Block` runs, equal ones included."""
        i = j = 0
        cur: list[int] | None = None  # [r0, r1, h0, h1] of the edited run being built
        for op in self.ops:
            if cur is not None and op.ref_start == cur[1] and op.hyp_start == cur[3]:
                cur[1], cur[3] = op.ref_end, op.hyp_end
                continue
            if cur is not None:
                yield _edit_block(*cur)
                i, j = cur[1], cur[3]
            if op.ref_start > i:  # the text between two runs is equal
                yield Block("equal", i, op.ref_start, j, op.hyp_start)
            cur = [op.ref_start, op.ref_end, op.hyp_start, op.hyp_end]
        if cur is not None:
            yield _edit_block(*cur)
            i, j = cur[1], cur[3]
        if i < self.ref_len:
            yield Block("equal", i, self.ref_len, j, self.hyp_len)

    def to_dict(self) -> dict:
        """CER/WER and counts as a JSON-ready dict (without the ops)."""
        return {"cer": self.cer, "wer": self.wer, "distance": self.distance,
                "ref_len": self.ref_len, "hyp_len": self.hyp_len,
                "word_distance": self.word_distance, "ref_words": self.ref_words,
                "hyp_words": self.hyp_words, "ops": self.counts}


def _edit_block(r0: int, r1: int, h0: int, h1: int) -> Block:
    tag = "replace" if r1 > r0 and h1 > h0 else ("delete" if r1 > r0 else "insert")
    return Block(tag, r0, r1, h0, h1)


# ---- the anchored diff ---------------------------------------------------------------------

def _grams(s: str, lo: int, hi: int, kind: str, n: int) -> dict[str, int]:
    """Grams of ``s[lo:hi]`` that occur exactly once there: ``{gram: start}``."""
    sub = s[lo:hi]
    if kind == "w":
        spans = [m.span() for m in WORD.finditer(sub)]
        k = len(spans) - n + 1
        keys = [sub[spans[i][0]:spans[i + n - 1][1]] for i in range(k)]
        starts = [spans[i][0] + lo for i in range(k)]
    else:
        keys = [sub[i:i + n] for i in range(len(sub) - n + 1)]
        starts = range(lo, lo + len(keys))
    # Counter and dict(zip()) loop in C; a gram's position is kept only when it is unique.
    pos = dict(zip(keys, starts, strict=True))
    return {g: pos[g] for g, c in Counter(keys).items() if c == 1}


def _lis(pairs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Longest chain of ``(a, b, length)`` pairs (sorted by ``a``) with increasing ``b``."""
    tails: list[int] = []      # smallest b ending a chain of each length
    tail_idx: list[int] = []
    prev = [-1] * len(pairs)
    for k, (_, b, _) in enumerate(pairs):
        pos = bisect_left(tails, b)
        if pos == len(tails):
            tails.append(b)
            tail_idx.append(k)
        else:
            tails[pos] = b
            tail_idx[pos] = k
        prev[k] = tail_idx[pos - 1] if pos else -1
    out = []
    k = tail_idx[-1] if tail_idx else -1
    while k >= 0:
        out.append(pairs[k])
        k = prev[k]
    out.reverse()
    return out


class _Differ:
    """Collects the ops of one anchored diff (state of one computation, not reused)."""

    def __init__(self, a: str, b: str, *, levels: tuple[tuple[str, int, int], ...],
                 probe: int, direct_cells: int, trim: int, want_ops: bool) -> None:
        self.a, self.b = a, b
        self.levels, self.direct_cells, self.trim = levels, direct_cells, trim
        self.probe = probe
        self.want_ops = want_ops
        self.distance = 0
        self.kinds = bytearray()
        self.rpos = array("q")
        self.hpos = array("q")
        #: The exactly aligned windows, left to right: ``(a0, a1, b0, b1, cost, first_op)``;
        #: between two consecutive ones lies an anchor (equal text), see :meth:`_verify`.
        self.pieces: list[tuple[int, int, int, int, int, int]] = []

    def run(self) -> _Differ:
        a, b = self.a, self.b
        anchors = self._sparse() if len(a) * len(b) > self.direct_cells else []
        pa = pb = 0
        for s, e, t in anchors:
            self._window(pa, s, pb, t, 0)
            pa, pb = e, t + (e - s)
        self._window(pa, len(a), pb, len(b), 0)
        if len(self.pieces) > 1:
            self._verify()
        if anchors and self.distance > max(len(a), len(b)):
            self._rollback((0, 0, 0))  # chance anchors in unrelated texts (see _window)
            self._exact(0, len(a), 0, len(b))
        return self

    def _sparse(self) -> list[tuple[int, int, int]]:
        """Sparse anchors ``(a_start, a_end, b_start)``, one about every ``spacing`` symbols.

        A probe (``probe`` symbols of the reference) is looked for in the hypothesis near
        where the last anchor's diagonal says it should be; it anchors when it occurs
        exactly once there and once in the reference around it. A probe that misses (an
        edit inside it, or text moved by more than the slack) is retried a little further
        on, with a slack that doubles after every 16 misses, so a big insertion or a lost
        page is crossed. Everything between two anchors is a window of at most about
        ``direct_cells`` cells, aligned exactly; searching is ``str.find`` in C, so this
        pass costs little next to rapidfuzz.
        """
        a, b, n = self.a, self.b, self.probe
        na, nb = len(a), len(b)
        spacing = max(4 * n, isqrt(self.direct_cells) // 8)
        retry = max(1, n // 2)
        slack0 = 2 * spacing
        out: list[tuple[int, int, int]] = []
        d = ea = eb = misses = 0
        slack = slack0
        p = spacing
        m = self.trim
        while p + n <= na - spacing // 2:
            g = a[p:p + n]
            lo, hi = max(eb, p + d - slack), min(nb, p + d + slack + n)
            q = b.find(g, lo, hi) if lo < hi else -1
            if q >= 0 and b.find(g, q + 1, hi) < 0:
                alo, ahi = max(ea, p - slack), min(na, p + slack + n)
                if a.find(g, alo, ahi) == p and a.find(g, p + 1, ahi) < 0:
                    if n - 2 * m > 0:
                        out.append((p + m, p + n - m, q + m))
                    d, ea, eb = q - p, p + n, q + n
                    p += spacing
                    misses, slack = 0, slack0
                    continue
            p += retry
            misses += 1
            if misses % 16 == 0:
                slack *= 2
        return out

    def _mark(self) -> tuple[int, int, int]:
        return len(self.kinds), self.distance, len(self.pieces)

    def _rollback(self, mark: tuple[int, int, int]) -> None:
        n, self.distance, k = mark
        del self.kinds[n:], self.rpos[n:], self.hpos[n:], self.pieces[k:]

    def _verify(self) -> None:
        """Check every anchor against the windows on its sides; merge where it is misplaced.

        ``self.pieces`` are the exactly aligned windows in text order, with equal text (the
        anchors) between them. Left to right, the text from the start of the window before
        an anchor to the end of the window after it is aligned again as one window, with
        their summed cost minus one as ``score_cutoff`` (rapidfuzz then computes only the
        band of diagonals where a cheaper alignment could run, so a check costs about what
        the two windows cost). If that is cheaper, the anchor lies off every optimal
        alignment of the region: it is dropped, the merged window (exact) replaces the two,
        and it is checked in turn against the window before it, so a run of misplaced
        anchors ends up as one exact window.

        A check is skipped when the windows cost no more than the difference of the
        region's lengths (no alignment of it can cost less). Such a region has its ends
        pinned on two diagonals and says nothing about a detour between them, so the next
        check spans it too: a path that leaves the diagonal by 89 deletions and comes back
        by 86 insertions two anchors on is checked as one region. Windows without edits are
        equal text and count as part of the anchor around them.

        Afterwards every anchor lies inside a checked region whose anchored alignment costs
        what its exact alignment costs. Misplaced anchors each consistent with misplaced
        neighbours (a detour longer than two windows, all of them with edits) are not ruled
        out by this; the property tests look for them.
        """
        a, b = self.a, self.b
        out: list[tuple[int, int, int, int, int, int]] = []  # first_op -1: merged, no ops yet
        group: list[int] = []  # for out[k]: where the windows checked together with it start
        gcost: list[int] = []  # the cost of out[group[k]:k + 1]
        merged = False
        # Cells the checks may compute: those of one exact alignment of the whole texts in the
        # band of the anchored distance (at least DIRECT_CELLS, about a millisecond). Text
        # where most anchors are misplaced (a few words and their separators repeated over
        # pages) merges window after window, each merged window checked again with the next;
        # past this budget the whole is aligned exactly instead, so the checks of such text
        # cost no more than that exact alignment, which then follows.
        budget = max(DIRECT_CELLS, len(a) * min(len(b), 2 * self.distance + 1))
        for cur in self.pieces:
            if cur[4] == 0:
                continue  # equal text (or nothing) between two anchors: they act as one
            while out:
                g = group[-1]
                first = out[g]
                bound = gcost[-1] + cur[4]
                la, lb = cur[1] - first[0], cur[3] - first[2]
                if bound <= abs(la - lb):
                    group.append(g)  # nothing is cheaper here; check the next one over both
                    gcost.append(bound)
                    break
                budget -= la * min(lb, 2 * bound - 1)
                if budget < 0:
                    hint = self.distance
                    self._rollback((0, 0, 0))
                    self._exact(0, len(a), 0, len(b), hint=hint)
                    return
                d = Levenshtein.distance(a[first[0]:cur[1]], b[first[2]:cur[3]],
                                         score_cutoff=bound - 1)
                if d >= bound:  # the anchor is on an optimal alignment of the region
                    group.append(len(out))
                    gcost.append(cur[4])
                    break
                del out[g:], group[g:], gcost[g:]
                cur = (first[0], cur[1], first[2], cur[3], d, -1)
                merged = True
                budget -= la * min(lb, 2 * d + 1)  # its edit operations, computed below
            else:  # nothing before it (the first window, or all before it merged into it)
                group.append(0)
                gcost.append(cur[4])
            out.append(cur)
        if not merged:
            return
        old = self.kinds, self.rpos, self.hpos
        self.kinds, self.rpos, self.hpos = bytearray(), array("q"), array("q")
        self.pieces, self.distance = [], 0
        for a0, a1, b0, b1, cost, k in out:
            if k < 0:
                self._exact(a0, a1, b0, b1, hint=cost)
                continue
            self.pieces.append((a0, a1, b0, b1, cost, len(self.kinds)))
            self.distance += cost
            if self.want_ops:
                self.kinds += old[0][k:k + cost]
                self.rpos += old[1][k:k + cost]
                self.hpos += old[2][k:k + cost]

    def _window(self, a0: int, a1: int, b0: int, b1: int, level: int) -> None:
        # An explicit stack instead of recursion: gaps are processed left to right. After
        # an anchored window's gaps, a check: costing more than max(la, lb) (what replacing
        # everything costs) means its anchors were chance matches (unrelated text): the
        # window is then aligned exactly as a whole.
        stack: list[tuple] = [(a0, a1, b0, b1, level)]
        while stack:
            item = stack.pop()
            if len(item) == 6:  # the check of an anchored window
                a0, a1, b0, b1, mark, _ = item
                if self.distance - mark[1] > max(a1 - a0, b1 - b0):
                    self._rollback(mark)
                    self._exact(a0, a1, b0, b1)
                continue
            a0, a1, b0, b1, level = item
            la, lb = a1 - a0, b1 - b0
            cells = la * lb
            if (la == 0 or lb == 0 or cells <= self.direct_cells or level >= len(self.levels)
                    or cells <= self.levels[level][2]):
                self._exact(a0, a1, b0, b1)
                continue
            anchors = self._anchors(a0, a1, b0, b1, self.levels[level])
            if not anchors:
                stack.append((a0, a1, b0, b1, level + 1))
                continue
            gaps = []
            pa, pb = a0, b0
            for s, e, t in anchors:
                gaps.append((pa, s, pb, t, level))
                pa, pb = e, t + (e - s)
            gaps.append((pa, a1, pb, b1, level))
            stack.append((a0, a1, b0, b1, self._mark(), "check"))
            stack.extend(reversed(gaps))

    def _anchors(self, a0: int, a1: int, b0: int, b1: int,
                 level: tuple[str, int, int]) -> list[tuple[int, int, int]]:
        """Equal blocks ``(a_start, a_end, b_start)`` to align through, in order."""
        ga = _grams(self.a, a0, a1, level[0], level[1])
        if not ga:
            return []
        gb = _grams(self.b, b0, b1, level[0], level[1])
        common = ga.keys() & gb.keys()
        pairs = sorted(zip(map(ga.__getitem__, common), map(gb.__getitem__, common),
                           map(len, common), strict=True))
        if not pairs:
            return []
        blocks: list[list[int]] = []  # [a_start, a_end, b_start]
        for s, t, n in _lis(pairs):
            if blocks:
                last = blocks[-1]
                if t - s == last[2] - last[0] and s <= last[1]:  # same diagonal, touching
                    last[1] = max(last[1], s + n)
                    continue
                if s < last[1] or t < last[2] + (last[1] - last[0]):
                    continue  # overlaps the previous block on another diagonal
            blocks.append([s, s + n, t])
        out = []
        m = self.trim
        for s, e, t in blocks:
            lo = 0 if (s == a0 and t == b0) else m
            hi = 0 if (e == a1 and t + (e - s) == b1) else m
            if e - s - lo - hi > 0:
                out.append((s + lo, e - hi, t + lo))
        return out

    def _exact(self, a0: int, a1: int, b0: int, b1: int, hint: int | None = None) -> None:
        la, lb = a1 - a0, b1 - b0
        if la == 0 or lb == 0:
            self.pieces.append((a0, a1, b0, b1, la + lb, len(self.kinds)))
            self.distance += la + lb
            if self.want_ops:
                code, n = (2, la) if la else (1, lb)
                self.kinds.extend(bytes([code]) * n)
                if la:
                    self.rpos.extend(range(a0, a1))
                    self.hpos.extend([b0] * la)
                else:
                    self.rpos.extend([a0] * lb)
                    self.hpos.extend(range(b0, b1))
            return
        x, y = self.a[a0:a1], self.b[b0:b1]
        if hint is None and la * lb > self.direct_cells:
            hint = abs(la - lb) + 1
        if not self.want_ops:
            cost = Levenshtein.distance(x, y, score_hint=hint)
            self.pieces.append((a0, a1, b0, b1, cost, 0))
            self.distance += cost
            return
        ops = Levenshtein.editops(x, y, score_hint=hint)
        self.pieces.append((a0, a1, b0, b1, len(ops), len(self.kinds)))
        self.distance += len(ops)
        kinds, rpos, hpos = self.kinds, self.rpos, self.hpos
        for tag, i, j in ops.as_list():
            kinds.append(_CODE[tag])
            rpos.append(a0 + i)
            hpos.append(b0 + j)


def _code_words(ref_words: list[str], hyp_words: list[str]) -> tuple[str, str]:
    """Both word sequences as strings with one character per distinct word."""
    vocab = dict.fromkeys(ref_words)
    vocab.update(dict.fromkeys(hyp_words))
    # code points from "!" on, skipping the surrogate block (not valid in a str for hashing)
    codes = {w: chr(i + 0x21 if i + 0x21 < 0xD800 else i + 0x821) for i, w in enumerate(vocab)}
    return "".join(map(codes.__getitem__, ref_words)), "".join(map(codes.__getitem__, hyp_words))


@dataclass(frozen=True)
class _Options:
    direct_cells: int
    trim: int

    def __post_init__(self) -> None:
        if self.direct_cells < 0:
            raise ConfigError(f"direct_cells must be >= 0, got {self.direct_cells}.")
        if self.trim < 0:
            raise ConfigError(f"trim must be >= 0, got {self.trim}.")


def align(reference: str, hypothesis: str, *, words: bool = True,
          direct_cells: int = DIRECT_CELLS, trim: int = TRIM) -> Alignment:
    """Align ``reference`` (the edited text) with ``hypothesis`` (the raw/OCR text).

    Args:
        reference: The text errors are measured against (CER/WER denominators).
        hypothesis: The text to evaluate.
        words: Also compute the word-level distance (WER); ``False`` leaves ``wer`` and
            ``word_distance`` at 0.
        direct_cells: Windows with at most this many DP cells are aligned exactly in one
            step; ``0`` forces anchoring everywhere (used by the tests).
        trim: Characters given back to the exact step at both ends of every anchored block.

    Returns:
        The :class:`Alignment` with ops, CER and WER.
    """
    _Options(direct_cells, trim)
    d = _Differ(reference, hypothesis, levels=CHAR_LEVELS, probe=CHAR_PROBE,
                direct_cells=direct_cells, trim=trim, want_ops=True).run()
    ops = tuple(_ops(d))
    n = [0, 0, 0]
    for code in d.kinds:
        n[code] += 1
    wd = rw = hw = 0
    if words:
        rws, hws = reference.split(), hypothesis.split()
        rw, hw = len(rws), len(hws)
        ra, hb = _code_words(rws, hws)
        wd = _Differ(ra, hb, levels=WORD_LEVELS, probe=WORD_PROBE, direct_cells=direct_cells,
                     trim=WORD_TRIM, want_ops=False).run().distance
    return Alignment(
        distance=d.distance, ref_len=len(reference), hyp_len=len(hypothesis),
        cer=d.distance / len(reference) if reference else float(d.distance),
        word_distance=wd, ref_words=rw, hyp_words=hw,
        wer=wd / rw if rw else float(wd),
        n_replace=n[0], n_insert=n[1], n_delete=n[2], ops=ops)


def _ops(d: _Differ) -> Iterator[EditOp]:
    # Gaps are emitted left to right and rapidfuzz sorts ops within a gap, so the ops are
    # already in text order.
    for code, i, j in zip(d.kinds, d.rpos, d.hpos, strict=True):
        if code == 0:
            yield EditOp("replace", i, i + 1, j, j + 1)
        elif code == 1:
            yield EditOp("insert", i, i, j, j + 1)
        else:
            yield EditOp("delete", i, i + 1, j, j)


def apply_ops(reference: str, hypothesis: str, ops: Sequence[EditOp]) -> str:
    """Rebuild the hypothesis from the reference and the ops (hypothesis supplies the new
    characters): a check that an op list is a valid transcript."""
    out, i = [], 0
    for op in ops:
        out.append(reference[i:op.ref_start])
        out.append(hypothesis[op.hyp_start:op.hyp_end])
        i = op.ref_end
    out.append(reference[i:])
    return "".join(out)


def _size(b: Block) -> int:
    return max(b.ref_end - b.ref_start, b.hyp_end - b.hyp_start)


def cleanup(blocks: Iterable[Block]) -> list[Block]:
    """Blocks with chance matches folded into the edits around them.

    Inside a long insertion (a title page, a header) an optimal alignment is free to match a
    stray ``e`` or ``the`` of the inserted text to the edited text: same distance, but the
    furniture then looks partly matched and the edits around it look like confusions. An
    equal run shorter than half of each edit on its two sides, or of at most 2 characters
    next to an edit of 4 or more, is folded with them into one ``replace`` block (the
    distance is not recomputed: this view is for mining and display, CER comes from the
    exact alignment).
    """
    out: list[Block] = []
    for b in blocks:
        out.append(b)
        while (len(out) >= 3 and out[-1].tag != "equal" and out[-2].tag == "equal"
               and out[-3].tag != "equal"):
            a, e, c = out[-3], out[-2], out[-1]
            n = e.ref_end - e.ref_start
            if not (2 * n < min(_size(a), _size(c))
                    or (n <= 2 and max(_size(a), _size(c)) >= 4)):
                break
            del out[-3:]
            out.append(Block("replace", a.ref_start, c.ref_end, a.hyp_start, c.hyp_end))
    # at either end of the text there is no edit on the far side: fold a chance match there
    # into the edit next to it (a garbled page number "Nn." after the last word)
    for i, j in ((-1, -2), (0, 1)):
        if len(out) >= 2 and out[i].tag == "equal" and out[j].tag != "equal":
            e, c = out[i], out[j]
            n = e.ref_end - e.ref_start
            if n <= 2 or 2 * n < _size(c):
                lo, hi = (c, e) if i == -1 else (e, c)
                merged = Block("replace", lo.ref_start, hi.ref_end, lo.hyp_start, hi.hyp_end)
                if i == -1:
                    out[-2:] = [merged]
                else:
                    out[:2] = [merged]
    return out


#: Longest side (characters) of an edit :func:`top_edits` counts: confusions such as
#: ``rn`` -> ``m``, not lost or inserted passages, which hardly ever repeat.
SHORT_EDIT = 3


def top_edits(ref_text: str, hyp_text: str, alignment: Alignment, n: int) -> list[dict]:
    """The ``n`` most frequent short edits of ``alignment`` (of ``ref_text`` and
    ``hyp_text``), what ``corpus align`` lists.

    Every non-equal :class:`Block` whose longer side has at most :data:`SHORT_EDIT`
    characters counts once under its ``(reference, hypothesis)`` strings.

    Returns:
        ``[{"reference": str, "hypothesis": str, "count": int}]``, most frequent first;
        equal counts in the order the edits first occur.
    """
    edits: Counter = Counter()
    for b in alignment.blocks():
        r, h = ref_text[b.ref_start:b.ref_end], hyp_text[b.hyp_start:b.hyp_end]
        if b.tag != "equal" and max(len(r), len(h)) <= SHORT_EDIT:
            edits[(r, h)] += 1
    return [{"reference": r, "hypothesis": h, "count": c}
            for (r, h), c in edits.most_common(n)]


NORMALIZATIONS = ("nfc", "whitespace", "case")


def normalize(text: str, forms: Iterable[str]) -> str:
    """Text as OCR evaluations often compare it.

    Args:
        text: The text.
        forms: Any of ``nfc`` (Unicode composition: ``e`` + combining accent = ``é``),
            ``whitespace`` (every run of spaces and line breaks becomes one space: layout
            does not count), ``case`` (case-folded).
    """
    import unicodedata

    forms = set(forms)
    unknown = forms - set(NORMALIZATIONS)
    if unknown:
        raise ConfigError(f"unknown normalization(s) {sorted(unknown)}: expected any of "
                          f"{', '.join(NORMALIZATIONS)}.")
    if "nfc" in forms:
        text = unicodedata.normalize("NFC", text)
    if "whitespace" in forms:
        text = " ".join(text.split())
    if "case" in forms:
        text = text.casefold()
    return text


# ---- side-by-side HTML ---------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;width:100%}
td{vertical-align:top;width:50%;padding:4px 8px;border-bottom:1px solid #eee;
font-family:monospace;white-space:pre-wrap;word-break:break-word}
th{text-align:left;padding:4px 8px}.d{background:#fcc}.i{background:#cfc}.r{background:#fe9}
.ws{outline:1px dotted #999}"""


def _mark(text: str, cls: str) -> str:
    # Whitespace that was edited stays visible: a newline is shown as its symbol too.
    shown = html.escape(text).replace("\n", "\u21b5\n")
    extra = " ws" if text and not text.strip() else ""
    return f'<span class="{cls}{extra}">{shown}</span>'


def to_html(reference: str, hypothesis: str, alignment: Alignment, *,
            title: str = "alignment") -> str:
    """A self-contained side-by-side HTML diff (reference left, hypothesis right).

    Rows break at blank lines of the reference's equal text, so both columns stay in step.
    Deleted text is red, inserted green, replaced yellow; all text is HTML-escaped. Chance
    matches inside long insertions are shown as part of them (:func:`cleanup`).
    """
    rows: list[tuple[list[str], list[str]]] = [([], [])]
    for blk in cleanup(alignment.blocks()):
        r = reference[blk.ref_start:blk.ref_end]
        h = hypothesis[blk.hyp_start:blk.hyp_end]
        if blk.tag == "equal":
            parts = r.split("\n\n")
            for k, part in enumerate(parts):
                if k:
                    rows.append(([], []))
                esc = html.escape(part)
                rows[-1][0].append(esc)
                rows[-1][1].append(esc)
            continue
        cls = {"replace": "r", "insert": "i", "delete": "d"}[blk.tag]
        if r:
            rows[-1][0].append(_mark(r, cls))
        if h:
            rows[-1][1].append(_mark(h, cls))
    a = alignment
    head = (f"CER {a.cer:.2%} ({a.distance:,} edits over {a.ref_len:,} chars), "
            f"WER {a.wer:.2%}; {a.n_replace:,} replaced, {a.n_insert:,} inserted, "
            f"{a.n_delete:,} deleted")
    body = "\n".join(f"<tr><td>{''.join(x)}</td><td>{''.join(y)}</td></tr>" for x, y in rows)
    t = html.escape(title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title>"
            f"<style>{_CSS}</style></head><body><h1>{t}</h1><p>{html.escape(head)}</p>"
            "<table><tr><th>reference</th><th>hypothesis</th></tr>\n"
            f"{body}\n</table></body></html>\n")
