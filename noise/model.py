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

log = logging.getLogger(__name__)

# Context classes of an edit: is the character before it a word character, is the one after?
CONTEXTS = ("alone", "word-start", "word-end", "word-inner")
_CTX_INDEX = {name: i for i, name in enumerate(CONTEXTS)}
MAX_PATTERN = 3          # edited forms up to 3 characters go through the vectorised lookup
MAX_PROBABILITY = 0.95   # no character is always destroyed, whatever the scale


@functools.cache
def _word_table() -> np.ndarray:
    """``table[code]`` is True for word characters (letters and digits) of the BMP."""
    return np.fromiter((chr(i).isalnum() for i in range(0x10000)), dtype=bool, count=0x10000)


def context_class(context: str) -> int | None:
    """The context class of a mined context string, or None for "any context".

    Understands the class names of :data:`CONTEXTS` and neighbour forms such as ``a_b``
    (the characters left and right of the edit, ``^``/``$`` at a text or line edge).
    """
    c = (context or "").strip()
    if not c or c in ("any", "*"):
        return None
    if c in _CTX_INDEX:
        return _CTX_INDEX[c]
    m = re.fullmatch(r"(.?)_(.?)", c, flags=re.S)
    if m:
        left, right = m.group(1), m.group(2)
        return 2 * bool(left and left.isalnum()) + bool(right and right.isalnum())
    return None


@dataclass(frozen=True)
class Confusion:
    """One OCR substitution: ``edited`` (what the book says) read as ``raw``.

    Attributes:
        edited: The edited form, 0 to 3 characters (empty for an inserted mark).
        raw: What OCR produced instead (empty for a lost character).
        probability: Chance per opportunity (an occurrence of ``edited`` in ``context``;
            for an insertion, a position between two characters).
        context: A :data:`CONTEXTS` name, or ``""`` for any context.
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


class CharNoise:
    """Character-level OCR noise compiled for vectorised sampling (immutable once built).

    Every confusion becomes a key ``(context, code points)`` in a sorted array per pattern
    length; applying the noise looks every position up at once, draws one uniform per
    candidate position and keeps the ones under their probability.
    """

    def __init__(self, confusions: Iterable[Confusion]):
        conf = [c for c in confusions if c.probability > 0]
        self.confusions: tuple[Confusion, ...] = tuple(conf)
        # group outcomes by (length, context class, edited)
        groups: dict[tuple[int, int, str], list[tuple[str, float]]] = {}
        for c in conf:
            classes = range(4) if context_class(c.context) is None else [context_class(c.context)]
            for k in classes:
                groups.setdefault((len(c.edited), k, c.edited), []).append((c.raw, c.probability))
        self.outcomes: list[str] = []
        cdf: list[float] = []
        self._tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._starts: dict[int, np.ndarray] = {}
        by_len: dict[int, list[tuple[int, float, int]]] = {}
        for gid, ((length, k, edited), outs) in enumerate(sorted(groups.items())):
            total = sum(p for _, p in outs)
            acc = 0.0
            first = len(self.outcomes)
            for raw, p in sorted(outs):
                acc += p / total
                self.outcomes.append(raw)
                cdf.append(gid + min(acc, 1.0))
            cdf[-1] = gid + 1.0  # exact top of the group, whatever the rounding
            key = _key(k, [ord(ch) for ch in edited]) if length else k
            by_len.setdefault(length, []).append((key, min(total, 1.0), first, gid))
        # Global cdf: group g's outcomes occupy (g, g+1]; searchsorted(g + v) picks one.
        self._cdf = np.asarray(cdf, dtype=np.float64)
        for length, rows in by_len.items():
            rows.sort()
            keys = np.asarray([r[0] for r in rows], dtype=np.uint64)
            probs = np.asarray([r[1] for r in rows], dtype=np.float64)
            gids = np.asarray([r[3] for r in rows], dtype=np.int64)
            self._tables[length] = (keys, probs, gids)
            if length >= 1:
                starts = np.zeros(0x10000, dtype=bool)
                for key in keys.tolist():
                    starts[(key >> (16 * (length - 1))) & 0xFFFF] = True
                self._starts[length] = starts
        # insertions: probability per context class of the gap
        ins = np.zeros(4)
        ins_gid = np.full(4, -1, dtype=np.int64)
        if 0 in self._tables:
            keys, probs, gids = self._tables[0]
            ins[keys.astype(np.int64)] = probs
            ins_gid[keys.astype(np.int64)] = gids
        self._ins, self._ins_gid = ins, ins_gid

    # ---- sampling ---------------------------------------------------------------------
    def expected_edits(self, codes: np.ndarray, ctx_prev: np.ndarray,
                       word: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Candidate edits of a chunk: ``[(length, positions, probabilities, group ids)]``."""
        n = len(codes)
        out = []
        for length, (keys, probs, gids) in self._tables.items():
            if length == 0 or n < length:
                continue
            m = n - length + 1
            # Only positions whose first character starts some pattern are looked up.
            cand = np.flatnonzero(self._starts[length][codes[:m]])
            if not len(cand):
                continue
            after = cand + length
            nxt = np.zeros(len(cand), dtype=bool)
            inside = after < n
            nxt[inside] = word[after[inside]]
            k = ctx_prev[cand].astype(np.uint64) * 2 + nxt.astype(np.uint64)
            key = k << np.uint64(48)
            for j in range(length):
                key |= codes[cand + j].astype(np.uint64) << np.uint64(16 * (length - 1 - j))
            idx = np.searchsorted(keys, key)
            idx[idx == len(keys)] = 0
            hit = keys[idx] == key
            out.append((length, cand[hit], probs[idx[hit]], gids[idx[hit]]))
        if self._ins.any() and n:
            # a gap before position i (i = 0..n-1): context of the characters around it
            nxt = word
            k = ctx_prev.astype(np.int64) * 2 + nxt.astype(np.int64)
            p = self._ins[k]
            keep = np.flatnonzero(p > 0)
            out.append((0, keep, p[keep], self._ins_gid[k[keep]]))
        return out

    def sample(self, text: str, *, rate: float, rng: np.random.Generator) -> CharEvents:
        """Choose the edits of ``text`` so that their expected number is ``rate * len(text)``.

        The mined probabilities fix which characters are damaged and how, relative to each
        other; ``rate`` (the book's error level) fixes how much damage there is.
        """
        codes = _codes(text)
        n = len(codes)
        empty = CharEvents(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        if n == 0 or rate <= 0 or not self._tables:
            return empty
        word = _word_table()[codes]
        ctx_prev = np.zeros(n, dtype=bool)
        ctx_prev[1:] = word[:-1]
        cands = self.expected_edits(codes, ctx_prev, word)
        total = sum(float(p.sum()) for _, _, p, _ in cands)
        if total <= 0:
            return empty
        scale = rate * n / total
        pos_l, len_l, gid_l, v_l = [], [], [], []
        for length, pos, p, gids in cands:
            q = np.minimum(p * scale, MAX_PROBABILITY)
            u = rng.random(len(pos))
            hit = u < q
            pos_l.append(pos[hit])
            len_l.append(np.full(int(hit.sum()), length, dtype=np.int64))
            gid_l.append(gids[hit])
            v_l.append(u[hit] / q[hit])  # uniform in [0, 1) given the hit: picks the outcome
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
        lens = np.fromiter((len(s) for s in self.outcomes), dtype=np.int64,
                           count=len(self.outcomes))
        delta = np.cumsum(lens[events.outcome] - events.length)
        idx = np.searchsorted(events.pos, np.asarray(offsets, dtype=np.int64), side="left")
        shifted = np.asarray(offsets, dtype=np.int64) + np.where(idx > 0, delta[idx - 1], 0)
        return shifted.tolist()

    def noise(self, text: str, *, rate: float, rng: np.random.Generator,
              offsets: Sequence[int] = ()) -> tuple[str, list[int]]:
        """Apply noise at ``rate``; returns the noisy text and the shifted ``offsets``."""
        events = self.sample(text, rate=rate, rng=rng)
        return self.apply(text, events), self.shift(events, offsets)


def _codes(text: str) -> np.ndarray:
    # UTF-32 gives one integer per character; astral characters are clipped into the BMP
    # table (they never carry a mined confusion).
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.minimum(codes, 0xFFFF).astype(np.int64)


def _key(ctx: int, codes: Sequence[int]) -> int:
    key = ctx << 48
    for j, c in enumerate(codes):
        key |= min(c, 0xFFFF) << (16 * (len(codes) - 1 - j))
    return key


@dataclass(frozen=True)
class PageLayout:
    """How the printed book looked: lines, pages, furniture (all mined).

    Templates may use ``{title}``, ``{TITLE}``, ``{author}``, ``{AUTHOR}``, ``{isbn}``,
    ``{year}`` and, for page numbers, ``{n}``.

    Attributes:
        line_width: Characters per printed line.
        lines_per_page: Printed text lines per page.
        hyphenation: Share of line ends that break a word with a hyphen.
        blank_line: Share of line ends inside a paragraph read as a blank line (Tesseract
            splitting a paragraph into blocks).
        paragraph_joined: Share of paragraph breaks read without a blank line.
        front_matter: Template of the title/copyright page ("" for none).
        front_matter_rate: Share of books whose scan starts with that page.
        headers: Running header templates, one per page parity (even, odd pages), with
            the share of pages on which OCR read the header.
        page_number: Template of a page number line and the share of pages where OCR read it.
        page_number_position: ``top`` or ``bottom`` of the page.
    """

    line_width: int = 100
    lines_per_page: int = 45
    hyphenation: float = 0.0
    blank_line: float = 0.0
    paragraph_joined: float = 0.0
    front_matter: str = ""
    front_matter_rate: float = 0.0
    headers: tuple[tuple[str, float], ...] = ()
    page_number: tuple[str, float] = ("{n}", 0.0)
    page_number_position: str = "bottom"

    def __post_init__(self) -> None:
        if self.line_width < 20:
            raise ConfigError(f"line_width must be at least 20 characters, got "
                              f"{self.line_width}.")
        if self.lines_per_page < 2:
            raise ConfigError(f"lines_per_page must be at least 2, got {self.lines_per_page}.")
        for name in ("hyphenation", "blank_line", "paragraph_joined", "front_matter_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} is a share in [0, 1], got {v}.")
        if self.page_number_position not in ("top", "bottom"):
            raise ConfigError(f"page_number_position must be top or bottom, got "
                              f"{self.page_number_position!r}.")

    @property
    def chars_per_page(self) -> int:
        """Characters of running text on a full page."""
        return self.line_width * self.lines_per_page

    def structural_edits(self, n_chars: int) -> float:
        """Expected edits the layout alone makes to a book of ``n_chars`` edited characters.

        Each line end replaces a space (1 edit; 2 when hyphenated, 1 more for a blank
        line); each page adds its read furniture; the front matter is inserted whole.
        """
        lines = n_chars / self.line_width
        pages = max(1.0, lines / self.lines_per_page)
        header = statistics.fmean([p * (len(t) + 2) for t, p in self.headers]) \
            if self.headers else 0.0
        number = self.page_number[1] * (len(self.page_number[0]) + 2)
        edits = lines * (1 + self.hyphenation + self.blank_line)
        edits += (pages - 1) * 2 + pages * (header + number)
        edits += self.front_matter_rate * (len(self.front_matter) + 2)
        return edits


@dataclass(frozen=True)
class NoiseModel:
    """Everything needed to make a raw-looking variant of an edited book.

    Attributes:
        layout: The page layout.
        chars: Character confusions.
        error_levels: Character-level error rate of each real book (CER minus the share of
            edits its page layout explains), sorted; a synthetic book draws one.
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

    @staticmethod
    def error_levels_from(alignments: Iterable[Mapping], layout: PageLayout) -> tuple[float, ...]:
        """Per-book character error rates from ``alignments`` rows (see :class:`NoiseModel`)."""
        levels = []
        for row in alignments:
            n = row.get("n_ref_chars") or 0
            if not n or row.get("cer") is None:
                continue
            levels.append(max(0.0, row["cer"] - layout.structural_edits(n) / n))
        return tuple(sorted(levels))

    def summary(self) -> dict:
        """A small JSON-able description (for logs and lineage)."""
        lv = self.error_levels
        return {
            "line_width": self.layout.line_width,
            "lines_per_page": self.layout.lines_per_page,
            "hyphenation": round(self.layout.hyphenation, 4),
            "blank_line": round(self.layout.blank_line, 4),
            "headers": [h for h, _ in self.layout.headers],
            "page_number": list(self.layout.page_number),
            "front_matter": bool(self.layout.front_matter),
            "confusions": len(self.chars.confusions),
            "error_level_median": round(statistics.median(lv), 4),
            "books": len(lv),
            **{f"{k}_version": v for k, v in self.source.items()},
        }


def isbn_hyphenated(book_id: str) -> str:
    """An ISBN-13 printed the way a copyright page has it (978-1-2345-6789-0)."""
    d = re.sub(r"\D", "", book_id)
    if len(d) != 13:
        return book_id
    return f"{d[:3]}-{d[3]}-{d[4:8]}-{d[8:12]}-{d[12]}"


def fill(template: str, *, title: str, author: str, isbn: str, year: int, n: int = 0) -> str:
    """Fill a layout template (unknown placeholders are left as they are)."""
    values = {"title": title, "TITLE": title.upper(), "author": author,
              "AUTHOR": author.upper(), "isbn": isbn, "year": str(year), "n": str(n)}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


# Artifact kinds applied inside lines by CharNoise.
CHAR_KINDS = ("char_confusion", "ligature", "punctuation", "whitespace")


def model_from_tables(artifacts: Sequence[Mapping], alignments: Sequence[Mapping], *,
                      source: Mapping[str, int] | None = None) -> NoiseModel:
    """Build the model from ``artifacts`` rows and per-book ``alignments`` rows.

    See :mod:`noise.mine` for what each artifact kind's columns hold.
    """
    layout_args: dict = {}
    confusions: list[Confusion] = []
    headers: list[tuple[str, float]] = []
    for a in artifacts:
        kind, raw, edited = a["kind"], a["raw"], a["edited"]
        p = float(a.get("probability") or 0.0)
        if kind in CHAR_KINDS:
            if "\n" in raw or "\n" in edited or len(edited) > MAX_PATTERN or raw == edited:
                continue
            confusions.append(Confusion(edited, raw, min(p, 1.0), a.get("context") or ""))
        elif kind == "hyphenation":
            layout_args["hyphenation"] = layout_args.get("hyphenation", 0.0) + p
        elif kind == "running_header":
            headers.append((raw, p))
        elif kind == "page_number":
            layout_args["page_number"] = (raw, p)
        elif kind == "front_matter":
            layout_args["front_matter"] = raw
            layout_args["front_matter_rate"] = p
    if headers:
        layout_args["headers"] = tuple(headers)
    layout = PageLayout(**layout_args)
    levels = NoiseModel.error_levels_from(alignments, layout)
    return NoiseModel(layout, CharNoise(confusions), levels, dict(source or {}))
