"""The noise model: what a scan and its OCR do to a book, as numbers mined from real pairs.

A :class:`NoiseModel` has three parts, each built from a pinned ``artifacts`` version and the
per-book CER of a pinned ``alignments`` version (:func:`NoiseModel.from_tables`):

* :class:`PageLayout` — how the printed book looks before OCR reads it: a title/copyright
  page, lines of a fixed width with hyphenated line ends, pages of a fixed number of lines
  with a running header and a page number, the blank lines Tesseract puts between blocks.
* :class:`CharNoise` — what OCR does inside a line: character confusions (``rn`` → ``m``,
  ``e`` → ``é``, ``.`` → ``,``), lost and invented spaces, stray marks; each with its mined
  probability per opportunity and the context it was seen in (start, inside or end of a
  word, or alone).
* the per-book error level: the character-level error rate of each real book, i.e. its
  CER minus the share of its edits that the page layout explains, from which every
  synthetic book draws its own level (scans differ more between books than within one).

:class:`CharNoise` is vectorised: one pass of numpy over a chunk's code points decides every
error position (probability lookup per character, bigram and trigram, a uniform draw each),
and the chunk is reassembled from slices, so its cost is a few array passes per megabyte
instead of a Python step per character.
"""

from __future__ import annotations

import functools
import logging
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from catalog import ConfigError
from catalog.rules import OCR

log = logging.getLogger(__name__)

# Context classes of an edit: is the character before it a word character, is the one after?
CONTEXTS = ("alone", "word-start", "word-end", "word-inner")
_CTX_INDEX = {name: i for i, name in enumerate(CONTEXTS)}
MAX_PATTERN = 3          # edited forms up to 3 characters go through the vectorised lookup
MAX_PROBABILITY = 0.95   # no character is always destroyed, whatever the scale
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: keys of exact contexts are hashed with it
_M64 = (1 << 64) - 1
EDGE = "\n"              # a line edge (mined as ^ / $) is a newline in the set text
_HASH_BITS = 16          # prefilter bitmaps of 2**16 entries: small enough to stay in cache
_BITS = 1 << _HASH_BITS


_TRIPLE = (0x2545F491, 0x9E3779B9, 0x85EBCA6B)


def _triple(left: int, first: int, right: int) -> int:
    """A hash of (left neighbour, first edited character, right neighbour) into _BITS,
    computed modulo 2**32 as the vectorised lookup does."""
    a, b, c = _TRIPLE
    return ((left * a + first * b + right * c) & 0xFFFFFFFF) >> (32 - _HASH_BITS)


@functools.cache
def _word_table() -> np.ndarray:
    """``table[code]`` is True for word characters (letters and digits) of the BMP."""
    return np.fromiter((chr(i).isalnum() for i in range(0x10000)), dtype=bool, count=0x10000)


def context_class(context: str) -> int | None:
    """The context class of a context string, or None for "any context".

    Understands the class names of :data:`CONTEXTS` and neighbour forms ``L_R`` (the
    characters left and right of the edit, ``^``/``$`` at a line edge).
    """
    c = context or ""
    if not c.strip() or c in ("any", "*"):
        return None
    if c in _CTX_INDEX:
        return _CTX_INDEX[c]
    m = re.fullmatch(r"(.)_(.)", c, flags=re.S)
    if m:
        left, right = m.group(1), m.group(2)
        return 2 * left.isalnum() + right.isalnum()
    return None


def exact_context(context: str) -> tuple[str, str] | None:
    """``(left, right)`` characters of an ``L_R`` context (``^``/``$`` as a newline)."""
    m = re.fullmatch(r"(.)_(.)", context or "", flags=re.S)
    if not m:
        return None
    left, right = m.group(1), m.group(2)
    return (EDGE if left == "^" else left), (EDGE if right == "$" else right)


@dataclass(frozen=True)
class Confusion:
    """One OCR substitution: ``edited`` (what the book says) read as ``raw``.

    Attributes:
        edited: The edited form, 0 to 3 characters (empty for an inserted mark).
        raw: What OCR produced instead (empty for a lost character).
        probability: Chance per opportunity (an occurrence of ``edited`` in ``context``;
            for an insertion, a gap between two characters in ``context``).
        context: ``L_R`` (the exact neighbours, as mined), a :data:`CONTEXTS` class name,
            or ``""`` for any context.
    """

    edited: str
    raw: str
    probability: float
    context: str = ""

    def __post_init__(self) -> None:
        if self.edited == self.raw:
            raise ConfigError(f"confusion {self.edited!r} -> {self.raw!r} changes nothing.")
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"confusion {self.edited!r} -> {self.raw!r}: probability must "
                              f"be in [0, 1], got {self.probability}.")
        if len(self.edited) > MAX_PATTERN:
            raise ConfigError(f"confusion {self.edited!r}: edited forms longer than "
                              f"{MAX_PATTERN} characters belong to the page layout.")


@dataclass(frozen=True)
class CharEvents:
    """Edits chosen for one chunk: sorted, non-overlapping."""

    pos: np.ndarray      # start in the clean chunk
    length: np.ndarray   # characters replaced (0 for an insertion)
    outcome: np.ndarray  # index into CharNoise.outcomes


def _pack(codes: Sequence[int]) -> int:
    key = 0
    for c in codes:
        key = (key << 21) | c
    return key


def _mix(a: int, b: int) -> int:
    return (a * _MIX + b) & _M64


class CharNoise:
    """Character-level OCR noise compiled for vectorised sampling (immutable once built).

    Every confusion becomes a key in a sorted array per pattern length: for an exact
    context the hash of ``(edited, left, right)``, for a context class ``(edited, class)``.
    Applying the noise looks every candidate position up at once, draws one uniform per
    candidate and keeps those under their probability.
    """

    def __init__(self, confusions: Iterable[Confusion]):
        conf = [c for c in confusions if c.probability > 0]
        self.confusions: tuple[Confusion, ...] = tuple(conf)
        # group outcomes by (length, table, key): table 0 = exact context, 1 = class
        groups: dict[tuple[int, int, int], list[tuple[str, float]]] = {}
        triples: dict[int, int] = {}  # exact key -> its prefilter hash
        for c in conf:
            e = _pack([ord(ch) for ch in c.edited])
            ex = exact_context(c.context)
            if ex is not None:
                keys = [(0, _mix(e, _pack([ord(ex[0]), ord(ex[1])])))]
            else:
                k = context_class(c.context)
                keys = [(1, _mix(e, cls)) for cls in (range(4) if k is None else [k])]
            for table, key in keys:
                groups.setdefault((len(c.edited), table, key), []).append(
                    (c.raw, c.probability))
                if table == 0:
                    triples[key] = _triple(ord(ex[0]), ord(c.edited[0]) if c.edited else 0,
                                           ord(ex[1]))
        self.outcomes: list[str] = []
        cdf: list[float] = []
        rows: dict[tuple[int, int], list[tuple[int, float, int]]] = {}
        for gid, ((length, table, key), outs) in enumerate(sorted(groups.items())):
            total = sum(p for _, p in outs)
            acc = 0.0
            for raw, p in sorted(outs):
                acc += p / total
                self.outcomes.append(raw)
                cdf.append(gid + min(acc, 1.0))
            cdf[-1] = gid + 1.0  # exact top of the group, whatever the rounding
            rows.setdefault((length, table), []).append((key, min(total, 1.0), gid))
        # Global cdf: group g's outcomes occupy (g, g+1]; searchsorted(g + v) picks one.
        self._cdf = np.asarray(cdf, dtype=np.float64)
        self._outlen = np.fromiter((len(o) for o in self.outcomes), dtype=np.int64,
                                   count=len(self.outcomes))
        self._tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._row_hash: dict[int, list[int]] = {}
        for (length, table), rs in rows.items():
            rs.sort()
            if table == 0:
                self._row_hash[length] = [triples[r[0]] for r in rs]
            self._tables[(length, table)] = (
                np.asarray([r[0] for r in rs], dtype=np.uint64),
                np.asarray([r[1] for r in rs], dtype=np.float64),
                np.asarray([r[2] for r in rs], dtype=np.int64))
        # Prefilters per pattern length, so that only positions that can hit are looked up:
        # for exact contexts a bitmap over a hash of (left, first edited character, right)
        # (a few percent false positives), for class contexts the first character.
        self._exact_bits: dict[int, np.ndarray] = {}
        self._class_first: dict[int, np.ndarray] = {}
        # ... and a slot table: hash -> the one key row with that hash (-2: several), so a
        # hit is found by one gather instead of a binary search.
        self._slots: dict[int, np.ndarray] = {}
        for c in conf:
            m = len(c.edited)
            ex = exact_context(c.context)
            first = ord(c.edited[0]) if m else 0
            if ex is not None:
                bits = self._exact_bits.setdefault(m, np.zeros(_BITS, dtype=bool))
                bits[_triple(ord(ex[0]), first, ord(ex[1]))] = True
            else:
                firsts = self._class_first.setdefault(m, np.zeros(0x110000, dtype=bool))
                if m:
                    firsts[first] = True
                else:
                    firsts[:] = True

        for length, table in self._tables:
            if table != 0:
                continue
            slots = np.full(_BITS, -1, dtype=np.int32)
            for row, h in enumerate(self._row_hash[length]):
                slots[h] = row if slots[h] == -1 else -2
            self._slots[length] = slots

    # ---- sampling ---------------------------------------------------------------------
    def candidates(self, codes: np.ndarray,
                   ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Positions where some confusion can happen: ``[(length, pos, prob, group)]``.

        For an insertion (length 0) position ``i`` is the gap before character ``i``.
        """
        n = len(codes)
        out: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        if n == 0:
            return out
        # padded by a line edge on both sides: left of i is pad[i], i itself pad[i + 1]
        pad = np.empty(n + 2, dtype=np.uint32)
        pad[0] = pad[-1] = ord(EDGE)
        pad[1:-1] = codes
        mix = np.uint64(_MIX)
        hashed = None  # the three terms of _triple, computed once for every length
        for length, table in sorted(self._tables):
            keys, probs, gids = self._tables[(length, table)]
            if length > n:
                continue
            m = n - length + 1  # positions (gaps, for insertions: n + 1)
            if table == 0:
                if hashed is None:
                    hashed = [pad * np.uint32(k) for k in _TRIPLE]  # wraps mod 2**32
                h = hashed[0][:m] + hashed[2][length + 1:length + 1 + m]
                if length:
                    h += hashed[1][1:1 + m]
                h >>= np.uint32(32 - _HASH_BITS)  # the high bits are the well-mixed ones
                pos = np.flatnonzero(self._exact_bits[length][h])
            else:
                pos = np.flatnonzero(self._class_first[length][pad[1:1 + m]]) if length \
                    else np.arange(m)
            if not len(pos):
                out.append((length, pos, np.zeros(0), np.zeros(0, np.int64)))
                continue
            e = np.zeros(len(pos), dtype=np.uint64)
            for j in range(length):
                e = (e << np.uint64(21)) | pad[pos + 1 + j].astype(np.uint64)
            if table == 0:
                ctx = (pad[pos].astype(np.uint64) << np.uint64(21)) | \
                    pad[pos + 1 + length].astype(np.uint64)
            else:
                word = _word_table()
                lw = word[np.minimum(pad[pos], 0xFFFF)] & (pos > 0)
                rw = word[np.minimum(pad[pos + 1 + length], 0xFFFF)] & (pos + length < n)
                ctx = lw.astype(np.uint64) * np.uint64(2) + rw.astype(np.uint64)
            key = e * mix + ctx  # wraps modulo 2**64, as _mix does
            if table == 0:
                idx = self._slots[length][h[pos]].astype(np.int64)
                shared = idx == -2
                if shared.any():
                    idx[shared] = np.searchsorted(keys, key[shared])
                idx[(idx < 0) | (idx >= len(keys))] = 0
            else:
                idx = np.searchsorted(keys, key)
                idx[idx == len(keys)] = 0
            hit = keys[idx] == key
            out.append((length, pos[hit], probs[idx[hit]], gids[idx[hit]]))
        return out

    def sample(self, text: str, *, rate: float, rng: np.random.Generator) -> CharEvents:
        """Choose the edits of ``text`` so that their expected number is ``rate * len(text)``.

        The mined probabilities fix which characters are damaged and how, relative to each
        other; ``rate`` (the book's error level) fixes how much damage there is.
        """
        codes = _codes(text)
        n = len(codes)
        if n == 0 or rate <= 0 or not self._tables:
            return _no_events()
        return self._choose(self.candidates(codes), n, rate=rate, rng=rng)

    def sample_many(self, texts: Sequence[str], *, rates: Sequence[float],
                    rngs: Sequence[np.random.Generator]) -> list[CharEvents]:
        """:meth:`sample` of many texts at once: the same events as one by one (each text
        draws from its own generator in the same order), with one lookup pass for all,
        which is what makes short texts cheap."""
        texts = list(texts)
        if not texts:
            return []
        # joined by a line edge: every text sees the same neighbours at its ends as alone
        # (and no edited form holds a newline, so nothing spans two texts)
        starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
        cands = self.candidates(_codes("\n".join(texts))) if self._tables else []
        ends = starts + np.array([len(t) + 1 for t in texts])
        # where each text's candidates begin and end, in every candidate list at once
        bounds = [(np.searchsorted(pos, starts).tolist(), np.searchsorted(pos, ends).tolist())
                  for _, pos, _, _ in cands]
        out = []
        for i, (text, rate, rng) in enumerate(zip(texts, rates, rngs, strict=True)):
            n = len(text)
            if n == 0 or rate <= 0 or not self._tables:
                out.append(_no_events())
                continue
            lo = int(starts[i])
            mine = []
            for (length, pos, p, gids), (a, b) in zip(cands, bounds, strict=True):
                if a[i] < b[i]:
                    mine.append((length, pos[a[i]:b[i]] - lo, p[a[i]:b[i]], gids[a[i]:b[i]]))
            out.append(self._choose(mine, n, rate=rate, rng=rng))
        return out

    def _choose(self, cands: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], n: int, *,
                rate: float, rng: np.random.Generator) -> CharEvents:
        total = sum(float(p.sum()) for _, _, p, _ in cands)
        if total <= 0:
            return _no_events()
        scale = rate * n / total
        pos_l, len_l, gid_l, v_l = [], [], [], []
        for length, pos, p, gids in cands:
            if not len(pos):  # draws nothing: skipping it leaves the random stream as is
                continue
            q = np.minimum(p * scale, MAX_PROBABILITY)
            u = rng.random(len(pos))
            hit = u < q
            pos_l.append(pos[hit])
            len_l.append(np.full(int(hit.sum()), length, dtype=np.int64))
            gid_l.append(gids[hit])
            v_l.append(u[hit] / q[hit])  # uniform in [0, 1) given the hit: picks the outcome
        if not pos_l:
            return _no_events()
        pos = np.concatenate(pos_l)
        length = np.concatenate(len_l)
        gid = np.concatenate(gid_l)
        v = np.concatenate(v_l)
        # by position; at one position an insertion (length 0) comes first, then longest
        order = np.lexsort((-length, length > 0, pos))
        pos, length, gid, v = pos[order], length[order], gid[order], v[order]
        # drop edits overlapping an earlier one
        end = pos + length
        prev_end = np.maximum.accumulate(np.concatenate([[0], end[:-1]]))
        keep = pos >= prev_end
        pos, length, gid, v = pos[keep], length[keep], gid[keep], v[keep]
        outcome = np.searchsorted(self._cdf, gid + np.minimum(v, 1 - 1e-12), side="right")
        outcome = np.minimum(outcome, len(self.outcomes) - 1)
        return CharEvents(pos, length, outcome)

    def apply(self, text: str, events: CharEvents) -> str:
        """``text`` with ``events`` applied."""
        if not len(events.pos):
            return text
        parts = []
        prev = 0
        outs = self.outcomes
        for p, n, o in zip(events.pos.tolist(), events.length.tolist(),
                           events.outcome.tolist(), strict=True):
            parts.append(text[prev:p])
            parts.append(outs[o])
            prev = p + n
        parts.append(text[prev:])
        return "".join(parts)

    def shift(self, events: CharEvents, offsets: Sequence[int]) -> list[int]:
        """Where clean-text ``offsets`` land in the noisy text (for page and chapter starts)."""
        if not len(offsets):
            return []
        if not len(events.pos):
            return list(offsets)
        delta = np.cumsum(self._outlen[events.outcome] - events.length)
        at = np.asarray(offsets, dtype=np.int64)
        idx = np.searchsorted(events.pos, at, side="left")
        return (at + np.where(idx > 0, delta[np.maximum(idx - 1, 0)], 0)).tolist()

    def noise(self, text: str, *, rate: float, rng: np.random.Generator,
              offsets: Sequence[int] = ()) -> tuple[str, list[int]]:
        """Apply noise at ``rate``; returns the noisy text and the shifted ``offsets``."""
        events = self.sample(text, rate=rate, rng=rng)
        return self.apply(text, events), self.shift(events, offsets)


def _no_events() -> CharEvents:
    return CharEvents(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


def _codes(text: str) -> np.ndarray:
    # UTF-32 gives one integer per character (21 bits used); a read-only view, no copy
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class PageLayout:
    """How the printed book looked: lines, pages, furniture (all mined).

    Templates use the placeholders of :mod:`noise.mine`: ``{title}``, ``{TITLE}``,
    ``{author}``, ``{AUTHOR}``, ``{isbn}``, ``{year}``, ``{n}``, ``{roman}``, ``{ROMAN}``.

    Attributes:
        line_width: Characters per printed line (lines are filled greedily up to it).
        lines_per_page: Printed text lines per page.
        hyphenation: Share of line ends inside a paragraph that break a word with a hyphen.
        blank_line: Share of line ends inside a paragraph read as a blank line (Tesseract
            starting a new block).
        paragraph_joined: Share of paragraph breaks read without their blank line.
        front_matter: ``(template, probability per book)``: title/copyright pages, at most
            one drawn per book; lines of a template are joined like paragraphs.
        headers: ``(parity, template, probability per page)``: running headers, ``even`` or
            ``odd`` by the page's number in the scan (the title page is page 1).
        page_numbers: ``(position, template, probability per page, offset)``: page number
            lines at the ``top`` or ``bottom``; the printed number is page + offset.
        headings: ``(edited, raw, probability)``: how chapter headings are printed, e.g.
            ``("Chapter {n}", "CHAPTER {n}", 0.6)``; probabilities are per heading of that
            edited form.
    """

    line_width: int = 100
    lines_per_page: int = 30
    hyphenation: float = 0.0
    blank_line: float = 0.0
    paragraph_joined: float = 0.0
    front_matter: tuple[tuple[str, float], ...] = ()
    headers: tuple[tuple[str, str, float], ...] = ()
    page_numbers: tuple[tuple[str, str, float, int], ...] = ()
    headings: tuple[tuple[str, str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.line_width < 20:
            raise ConfigError(f"line_width must be at least 20 characters, got "
                              f"{self.line_width}.")
        if self.lines_per_page < 2:
            raise ConfigError(f"lines_per_page must be at least 2, got {self.lines_per_page}.")
        for name in ("hyphenation", "blank_line", "paragraph_joined"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} is a share in [0, 1], got {v}.")
        for parity, _, _ in self.headers:
            if parity not in ("even", "odd"):
                raise ConfigError(f"header parity must be even or odd, got {parity!r}.")
        for position, _, _, _ in self.page_numbers:
            if position not in ("top", "bottom"):
                raise ConfigError(f"page number position must be top or bottom, got "
                                  f"{position!r}.")
        for group in (self.front_matter, [(t, p) for _, t, p in self.headers]):
            if any(not 0 <= p <= 1 for _, p in group):
                raise ConfigError("furniture probabilities must be in [0, 1].")

    @functools.cached_property
    def heading_rules(self) -> list[tuple[re.Pattern, list[tuple[str, float]]]]:
        """Compiled heading rules: edited pattern -> raw templates with conditional weights."""
        by: dict[str, list[tuple[str, float]]] = {}
        for edited, raw, p in self.headings:
            by.setdefault(edited, []).append((raw, p))
        rules = []
        for edited, outs in by.items():
            pat = re.escape(edited).replace(r"\{n\}", r"(?P<n>\d+)")
            total = sum(p for _, p in outs) or 1.0
            rules.append((re.compile(pat + r"\Z"), [(r, p / total) for r, p in outs]))
        return rules


@dataclass(frozen=True)
class NoiseModel:
    """Everything needed to make a raw-looking variant of an edited book.

    Attributes:
        layout: The page layout.
        chars: Character confusions.
        error_levels: Character-level error rate of each real book (its CER with the page
            structure left out, minus the edits line breaking and headings make), sorted;
            a synthetic book draws one.
        source: What the model was built from (``{"artifacts": 3, "alignments": 2}``).
    """

    layout: PageLayout
    chars: CharNoise
    error_levels: tuple[float, ...]
    source: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.error_levels:
            raise ConfigError("The noise model needs at least one real per-book error level: "
                              "run `corpus mine` on books with both an edited and an ocr text.")

    def draw_level(self, rng: np.random.Generator, *, scale: float = 1.0) -> float:
        """A book's character error rate: one real book's level, times ``scale``."""
        return float(self.error_levels[int(rng.integers(len(self.error_levels)))]) * scale

    def summary(self) -> dict:
        """A small JSON-able description (for logs and lineage)."""
        lv = self.error_levels
        lay = self.layout
        return {
            "line_width": lay.line_width,
            "lines_per_page": lay.lines_per_page,
            "hyphenation": round(lay.hyphenation, 4),
            "blank_line": round(lay.blank_line, 4),
            "paragraph_joined": round(lay.paragraph_joined, 4),
            "front_matter": round(sum(p for _, p in lay.front_matter), 4),
            "headers": [f"{parity}:{t}:{p:.2f}" for parity, t, p in lay.headers],
            "page_numbers": [f"{pos}:{t}:{p:.3f}" for pos, t, p, _ in lay.page_numbers],
            "headings": len(lay.headings),
            "confusions": len(self.chars.confusions),
            "error_level_median": round(statistics.median(lv), 5),
            "books": len(lv),
            **{f"{k}_version": v for k, v in self.source.items()},
        }


def isbn_hyphenated(book_id: str) -> str:
    """An ISBN-13 printed the way a copyright page has it (978-1-2345-6789-0)."""
    d = re.sub(r"\D", "", book_id)
    if len(d) != 13:
        return book_id
    return f"{d[:3]}-{d[3]}-{d[4:8]}-{d[8:12]}-{d[12]}"


def roman(n: int) -> str:
    """``n`` in upper-case Roman numerals (``n`` >= 1; 0 and below give ``""``)."""
    out = []
    for value, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"),
                       (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                       (4, "IV"), (1, "I")):
        while n >= value:
            out.append(sym)
            n -= value
    return "".join(out)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(template: str, *, title: str, author: str, isbn: str, year: int, n: int = 0) -> str:
    """Fill a layout template (unknown placeholders are left as they are)."""
    def one(m: re.Match) -> str:
        key = m.group(1)
        if key in ("title", "author"):
            return title if key == "title" else author
        if key in ("TITLE", "AUTHOR"):
            return (title if key == "TITLE" else author).upper()
        if key == "n":
            return str(n)
        if key in ("roman", "ROMAN"):
            return roman(n).lower() if key == "roman" else roman(n)
        if key in ("isbn", "year"):
            return isbn if key == "isbn" else str(year)
        return m.group(0)

    return _PLACEHOLDER.sub(one, template)


# ---- from mined tables --------------------------------------------------------------------

# Artifact kinds applied inside lines by CharNoise.
CHAR_KINDS = ("char_confusion", "ligature", "punctuation", "whitespace")
def _edits(raw: str, edited: str) -> int:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(raw, edited)


def model_from_tables(artifacts: Sequence[Mapping], alignments: Sequence[Mapping], *,
                      source: Mapping[str, int] | None = None, raw_variant: str = OCR,
                      edited_texts: Sequence[str] = ()) -> NoiseModel:
    """Build the model from ``artifacts`` rows and per-book ``alignments`` rows.

    See :mod:`noise.mine` for what each artifact kind's columns hold. Rows mined from
    another raw variant than ``raw_variant`` (e.g. a noisy one, to check a model) are
    ignored.

    Args:
        artifacts: ``artifacts`` rows.
        alignments: ``alignments`` rows (per-book CER; their page counts calibrate the
            page size).
        source: Table versions, recorded in the model's summary.
        raw_variant: The raw variant the model imitates (the ``raw_variant`` column).
        edited_texts: The edited texts that were mined, by the order of ``alignments``
            rows: with them the line width and page size are calibrated so that setting
            those texts gives the mined line length and the scans' page counts; without
            them the mined mean line length is taken as the width (too narrow: short last
            lines of paragraphs pull the mean down).
    """
    arts = [a for a in artifacts if (a.get("raw_variant") or raw_variant) == raw_variant]
    rows = [r for r in alignments if (r.get("raw_variant") or raw_variant) == raw_variant]
    confusions: list[Confusion] = []
    front, headers, numbers, headings = [], [], [], []
    line_ends = hyph = block = joined = 0.0
    mean_line = None
    for a in arts:
        kind, raw, edited, ctx = a["kind"], a["raw"], a["edited"], a.get("context") or ""
        p = float(a.get("probability") or 0.0)
        if kind in CHAR_KINDS:
            if "\n" in raw or "\n" in edited or len(edited) > MAX_PATTERN or raw == edited:
                continue
            confusions.append(Confusion(edited, raw, min(p, 1.0), ctx))
        elif kind == "hyphenation":
            line_ends = max(line_ends, float(a.get("opportunities") or 0))
            if ctx == "word":
                hyph += a["count"]
                if raw.count("\n") > 1:
                    block += a["count"]
        elif kind == "line_break":
            if ctx == "block_split":
                block += a["count"]
            elif ctx == "paragraph_join":
                joined = p
            elif ctx == "wrap" and a.get("value"):
                mean_line = float(a["value"])
        elif kind == "front_matter":
            # a template that still holds another book's title would print that title in
            # every synthetic book: only templates with the title as a placeholder are used
            if ctx == "page 1" and re.search(r"\{(title|TITLE)\}", raw):
                front.append((raw, p))
        elif kind == "running_header":
            parity = ctx.rsplit(":", 1)[-1]
            if parity in ("even", "odd"):
                headers.append((parity, raw, min(p, 1.0)))
        elif kind == "page_number":
            if "{n}" in raw or "{roman}" in raw or "{ROMAN}" in raw:
                pos = "top" if ctx.startswith("top") else "bottom"
                numbers.append((pos, raw, p, round(a.get("value") or 0)))
        elif kind == "heading":
            # unchanged headings are rows too: counts give the conditional distribution
            headings.append((edited, raw, float(a["count"])))
    total_front = sum(p for _, p in front)
    if total_front > 1:
        front = [(t, p / total_front) for t, p in front]
    layout = PageLayout(
        hyphenation=min(1.0, hyph / line_ends) if line_ends else 0.0,
        blank_line=min(1.0, block / line_ends) if line_ends else 0.0,
        paragraph_joined=min(1.0, joined),
        front_matter=tuple(sorted(front, key=lambda t: -t[1])),
        headers=tuple(sorted(headers)),
        page_numbers=tuple(sorted(numbers)),
        headings=tuple(sorted(headings)),
        **({"line_width": max(20, round(mean_line))} if mean_line else {}),
    )
    if edited_texts and line_ends:
        layout = calibrate(layout, edited_texts, line_ends=line_ends,
                           pages=[r.get("n_pages") or 0 for r in rows],
                           min_width=round(mean_line or 20))
    levels = error_levels(arts, rows)
    return NoiseModel(layout, CharNoise(confusions), levels, dict(source or {}))


def error_levels(artifacts: Sequence[Mapping], alignments: Sequence[Mapping],
                 ) -> tuple[float, ...]:
    """Per-book character error levels (see :class:`NoiseModel`), sorted.

    A book's body CER still counts the edits that line breaking, hyphenation and headings
    make, about the same share of every book's characters. The mined character-level
    patterns give the mean character error rate (their edits over all edited characters);
    every book's body CER is lowered by the same amount, the mean body CER minus that rate,
    so the levels keep the spread between books and average to the mined rate.
    """
    rows = [r for r in alignments if r.get("n_ref_chars")
            and (r.get("body_cer") if r.get("body_cer") is not None else r.get("cer"))
            is not None]
    n = sum(r["n_ref_chars"] for r in rows)
    if not n:
        return ()
    body = [r["body_cer"] if r.get("body_cer") is not None else r["cer"] for r in rows]
    mean_body = sum(b * r["n_ref_chars"] for b, r in zip(body, rows, strict=True)) / n
    char_edits = sum(a["count"] * _edits(a["raw"], a["edited"]) for a in artifacts
                     if a["kind"] in CHAR_KINDS)
    layout_share = max(0.0, mean_body - char_edits / n)
    return tuple(sorted(max(0.0, b - layout_share) for b in body))


def _set_lines(texts: Sequence[str], width: int) -> list[int]:
    """Lengths of every printed line when ``texts`` are set greedily at ``width``."""
    out = []
    for text in texts:
        for m in re.finditer(r"[^\n]+", text):
            par = m.group().strip()
            start, n = 0, len(par)
            while n - start > width:
                cut = par.rfind(" ", start, start + width + 1)
                if cut <= start:
                    cut = start + width
                out.append(cut - start)
                start = cut + 1 if par[cut:cut + 1] == " " else cut
            out.append(n - start)
    return out


def calibrate(layout: PageLayout, texts: Sequence[str], *, line_ends: float,
              pages: Sequence[int], min_width: int = 20) -> PageLayout:
    """The layout with its line width and page size fitted to the mined books.

    The width is the one at which setting ``texts`` breaks their paragraphs at as many line
    ends as the scans had (``line_ends``, counted by the miner); the page size makes the
    books' page counts add up to the scans' (``pages``; title pages included when front
    matter is common). The width is at least ``min_width`` (the mined mean line length:
    no width is narrower than the mean line).
    """
    import dataclasses

    n_pars = sum(1 for t in texts for m in re.finditer(r"[^\n]+", t) if m.group().strip())
    lo, hi = 20, 400
    while lo < hi:  # line ends fall as the width grows: the narrowest width not above target
        mid = (lo + hi) // 2
        if len(_set_lines(texts, mid)) - n_pars <= line_ends:
            hi = mid
        else:
            lo = mid + 1
    width = max(lo, min_width)
    front = sum(p for _, p in layout.front_matter)
    # lines of each book and its body pages in the scan; a book's last page is on average
    # half full, which is what the -0.5 says
    per_book = [len(_set_lines([t], width)) for t in texts]
    body_pages = [max(0.5, p - front - 0.5) for p in pages]
    multi = [(n, b) for n, b, p in zip(per_book, body_pages, pages, strict=True)
             if p - front >= 2]  # books with a full page: the only ones that show its size
    use = multi or list(zip(per_book, body_pages, strict=True))
    lines_per_page = round(sum(n for n, _ in use) / sum(b for _, b in use)) if use else \
        layout.lines_per_page
    return dataclasses.replace(layout, line_width=width,
                               lines_per_page=max(2, lines_per_page))
