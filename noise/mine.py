"""Artifact mining: what OCR and page layout did to each book, counted over all pairs.

Every book with an ``edited`` text and a raw variant (``ocr`` by default) is mined; a book
without an ``edited`` text but with a ``corrected`` one (OCR pages an editor corrected in the
review page) is mined against that, so every correction also teaches the noise model
(``alignments.reference`` says which was used). Each pair is aligned at book length
(:func:`noise.align.align`). The raw text's pages (``page_offsets``) and lines are then read
against the alignment: a raw line whose characters are mostly not matched to the
edited text is page furniture, not a string of unrelated insertions. What is left is counted
character by character. :func:`mine` is the pure core (pairs in, two Arrow tables out);
:func:`run_mine` pins the ``texts`` (and ``books``) versions it reads, overwrites
``alignments`` and ``artifacts`` and records the pinned versions as lineage of both commits
(and in their ``texts_version`` column).

``alignments``: one row per book: CER and WER of the raw text against the edited one, edit
counts by kind, ``structure_chars`` (raw characters recognised as front matter, running
headers and page numbers) and ``body_cer`` (the CER once those are left out of the raw text:
the damage OCR did to the text itself).

``artifacts``: one row per pattern. Columns, for every kind:

* ``raw`` / ``edited``: the raw (OCR) form and the edited form it stands for. ``edited`` is
  ``""`` for something that exists only in the raw text (furniture, an inserted mark).
* ``count``: how often it was seen; ``n_books``: in how many books.
* ``opportunities``: how often it could have happened (defined per kind below);
  ``probability = count / opportunities``.
* ``value``: a number some kinds carry (below), else null.

Templates: furniture is stored as a template, so that it generalises across books:
``{title}``/``{TITLE}`` (the book's title as printed, upper-cased when printed in capitals),
``{author}``/``{AUTHOR}``, ``{isbn}``, ``{year}``, ``{n}`` (a page or chapter number).
Characters OCR garbled inside furniture stay literal (``CHAPTER |``).

The kinds:

``front_matter``
    A title/copyright page before the body (a leading page with at most
    ``front_max_matched`` of its characters matched to the edited text). ``raw`` = the whole
    page as a template, its non-blank lines joined by ``"\\n"`` (e.g. ``"{title}\\nby
    {author}\\nCopyright (c) {year} by {author}\\nAll rights reserved.\\nISBN {isbn}\\n..."``);
    ``context`` = ``"page K"`` (K-th front page); ``count`` = books whose page K has this
    template; ``opportunities`` = books mined; ``value`` = mean number of lines on the page.
``running_header``
    Unmatched lines at the top of a body page (at most ``header_lines``). ``raw`` = the
    header template, its lines joined by ``"\\n"``; ``context`` = ``"top:even"`` or
    ``"top:odd"`` (parity of the 1-based page number in the scan; books alternate author and
    title); ``count`` = pages that carry it; ``opportunities`` = body pages of that parity
    (all books); ``probability`` = its rate per page.
``page_number``
    A short unmatched line (at most ``page_number_chars`` non-space characters) at the top
    or bottom of a body page. ``raw`` = the line with its number as ``{n}`` (``"{n}"``,
    ``"- {n} -"``, ``"Page {n}"``) or, when OCR garbled it beyond reading, the garbled text
    (``"Nn."``); ``context`` = ``"bottom"`` or ``"top"``; ``count`` = pages; ``opportunities``
    = body pages; ``value`` = mean printed number minus the 1-based page number in the scan
    (``-1``: the title page is not counted), null for garbled numbers.
``heading``
    A chapter heading as the raw text prints it. ``raw`` = the raw heading line(s) with the
    chapter number as ``{n}`` where it was read right (``"CHAPTER {n}"``, ``"CHAPTER |"``);
    ``edited`` = the edited heading (``"Chapter {n}"``); ``context`` = ``""``;
    ``opportunities`` = chapters mined.
``hyphenation``
    A line end that broke a word: ``raw`` = the break (``"-\\n"``, ``"-\\n\\n"`` when OCR also
    started a new block), ``edited`` = ``""``; ``context`` = ``"word"`` (a word broken with an
    added hyphen), ``"at_hyphen"`` (a hyphenated compound broken at its own hyphen: ``raw`` is
    just the line break) or ``"at_space"`` (a hyphen at a line end where the edited text has a
    space); ``opportunities`` = all line ends inside body text (wraps + hyphenations), so
    ``probability`` is the rate per line end; ``value`` = mean position of the break in the
    word (0..1: share of the word's letters before it).
``line_break``
    Whitespace edits that involve a newline. ``context`` = ``"wrap"`` (``edited`` ``" "`` →
    ``raw`` ``"\\n"``: a line end; ``opportunities`` = edited spaces; ``value`` = mean raw line
    length in characters, the line width to wrap at), ``"block_split"`` (``" "`` →
    ``"\\n\\n"``: OCR started a new block inside a paragraph; per edited space),
    ``"paragraph_join"`` (``"\\n\\n"`` → ``"\\n"``: a paragraph break lost its blank line; per
    edited paragraph break), ``"page_break"`` (the whitespace where two pages join, e.g. ``" "``
    → ``"\\n\\n"``; per page boundary), ``""`` (anything else; per occurrence of ``edited``,
    per character when ``edited`` is empty).
``whitespace``
    Space edits without a newline: ``" "`` → ``""`` (words run together), ``""`` → ``" "`` (a
    word split), ``" "`` → ``"  "``. ``context`` as for ``char_confusion``.
``unaligned_text``
    An edit run whose two sides differ as wholes (more than 8 edits, over half its length):
    a passage corrected after the scan, a line OCR lost or invented. ``raw``/``edited`` =
    the two sides (at most 200 characters each); ``context`` = ``""``; ``opportunities`` =
    books mined; ``value`` = mean length of the edited side. Not a confusion: left out of
    the character statistics.
``char_confusion``, ``punctuation``, ``ligature``
    A character-level confusion: ``edited`` (0 to ``max_pattern`` characters) read as ``raw``
    (``"rn"`` → ``"m"``, ``"I"`` → ``"|"``, ``"e"`` → ``""``). ``punctuation`` when every
    non-space character of both forms is punctuation or a symbol (``"'"`` → ``"’"``, ``" "`` →
    ``"."``), ``ligature`` when either form holds a typographic ligature (``"fi"`` →
    ``"ﬁ"``), else ``char_confusion``. ``context`` = ``"L_R"``: the edited characters left and
    right of the edit (``^``/``$`` at the start/end of a line or of the text), e.g. ``"o_n"``
    for ``"rn"`` → ``"m"`` in ``"morning"``... read as ``"moming"``. ``opportunities`` = the
    occurrences of ``L + edited + R`` in the edited texts (``L``/``R`` at a line edge match
    any line start/end); ``probability`` = the chance per occurrence. An edit run longer than
    ``max_pattern`` is counted as its single-character edits. Sum over contexts for the
    context-free rate (``sum(count) / sum(opportunities)``) when a context is too rare.
"""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import time
import unicodedata
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from catalog import TABLES, ConfigError, CorpusError, Lakehouse, Lineage, TableNotFoundError
from catalog.executor import Executor, Failed, check_executor, make_executor
from catalog.rules import CORRECTED, EDITED, OCR, PAGE_SEPARATOR
from noise.align import Alignment, Block, align, cleanup

log = logging.getLogger(__name__)

LIGATURES = frozenset("\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06")
_HYPHEN_BREAK = re.compile(r"[-\u00ad\u2010\u2011]([ \t]*\n\s*)")
_ISBN = re.compile(r"97[89](?:[- .]{0,2}\d){10}|(?<!\d)\d(?:[- .]?\d){8}[- .]?[\dX](?!\d)")
_YEAR = re.compile(r"(?<!\d)(1[5-9]\d\d|20\d\d)(?!\d)")
_NUMBER = re.compile(r"\d+")
_ROMAN = re.compile(r"(?i)(?=[mdclxvi])m{0,3}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")
_LINE = re.compile(r"[^\n]+")
FAILURES_KEPT = 20  # books that failed, named in the commits' lineage (all are counted)


@dataclass(frozen=True)
class MineConfig:
    """Options of ``corpus mine``.

    Attributes:
        raw_variant: The raw variant mined against the edited text (``ocr``, or e.g. a
            noisy variant to check a noise model); the ``raw_variant`` column of both tables
            (``corpus mine --variant``).
        reference: The clean variant (``edited``).
        fallback: The clean variant of a book without a ``reference`` text (``corrected``:
            OCR pages editors corrected); ``None`` uses ``reference`` only.
        max_pattern: Longest edited/raw form of a character pattern; longer edit runs are
            counted as their single-character edits.
        header_lines: At most this many unmatched lines at a page top are a running header.
        page_number_chars: At most this many non-space characters make a page number line.
        front_max_matched: A leading page with at most this share of its characters matched
            to the edited text is front matter.
        workers: Workers aligning books in parallel (None: every core here, every CPU of
            the cluster on Ray).
        executor: ``local`` (a process pool) or ``ray`` (:mod:`catalog.executor`).
        ray_address: The Ray cluster (default ``CORPUS_RAY_ADDRESS``, else Ray on this
            machine).
    """

    raw_variant: str = OCR
    reference: str = EDITED
    fallback: str | None = CORRECTED
    max_pattern: int = 3
    header_lines: int = 3
    page_number_chars: int = 8
    front_max_matched: float = 0.3
    workers: int | None = 1
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.raw_variant or self.raw_variant == self.reference:
            raise ConfigError(f"--variant must name a raw variant other than "
                              f"{self.reference!r}, got {self.raw_variant!r} (e.g. ocr).")
        if not 1 <= self.max_pattern <= 8:
            raise ConfigError(f"max_pattern must be 1..8, got {self.max_pattern}.")
        if not 0 <= self.header_lines <= 10:
            raise ConfigError(f"header_lines must be 0..10, got {self.header_lines}.")
        if self.page_number_chars < 1:
            raise ConfigError(f"page_number_chars must be >= 1, got {self.page_number_chars}.")
        if not 0.0 <= self.front_max_matched < 1.0:
            raise ConfigError("front_max_matched must be in [0, 1), got "
                              f"{self.front_max_matched}.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}.")
        check_executor(self.executor)


@dataclass(frozen=True)
class Pair:
    """One book's edited text and its raw variant.

    Attributes:
        book_id: The book.
        edited: The clean text (CER/WER reference).
        raw: The raw text (OCR).
        page_offsets: Start of every page in ``raw`` (empty: one page).
        chapter_offsets: Start of every chapter (its heading line) in ``edited``.
        title: The book's title, for templates (optional).
        author: The book's author(s), for templates (optional).
    """

    book_id: str
    edited: str
    raw: str
    page_offsets: Sequence[int] = ()
    chapter_offsets: Sequence[int] = ()
    title: str | None = None
    author: str | None = None
    reference: str = EDITED


# ---- per book ---------------------------------------------------------------------------------

@dataclass
class BookMining:
    """What one book contributes: its alignment row and its pattern observations."""

    row: dict
    # (kind, raw, edited, context) -> [count, value sum, value n]
    seen: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)
    # opportunities counted per book for the kinds that are not counted in the edited text
    chances: Counter = field(default_factory=Counter)

    def add(self, kind: str, raw: str, edited: str, context: str,
            value: float | None = None) -> None:
        s = self.seen.setdefault((kind, raw, edited, context), [0, 0.0, 0])
        s[0] += 1
        if value is not None:
            s[1] += value
            s[2] += 1


class _Map:
    """Edited position -> raw position through the alignment blocks."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.starts = [b.ref_start for b in blocks]

    def hyp(self, pos: int, *, end: bool = False) -> int:
        if not self.blocks:
            return 0
        k = max(0, bisect_right(self.starts, pos) - 1)
        if end and k > 0 and self.blocks[k].ref_start == pos:
            k -= 1  # an end position belongs to the block before
        b = self.blocks[k]
        if b.tag == "equal":
            return b.hyp_start + min(pos - b.ref_start, b.hyp_end - b.hyp_start)
        return b.hyp_end if end else b.hyp_start


def _norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.casefold()).strip()


def _similar(a: str, b: str) -> bool:
    from rapidfuzz import fuzz

    a, b = _norm(a), _norm(b)
    return bool(a and b) and fuzz.ratio(a, b) >= 88


def _case(name: str, printed: str) -> str:
    letters = [c for c in printed if c.isalpha()]
    upper = letters and sum(c.isupper() for c in letters) > 0.8 * len(letters)
    return "{" + (name.upper() if upper else name) + "}"


def template(line: str, *, title: str | None, author: str | None) -> str:
    """A furniture line as a template: title, author, ISBN, year replaced by placeholders.

    Args:
        line: One line of raw text (a header, a title-page line).
        title: The book's title (None: not templated).
        author: The book's author (None: not templated).
    """
    s = line.strip()
    t = s
    # the longer name first: a title may contain the author ("The Works of Edgar Allan Poe")
    names = sorted((("author", author), ("title", title)), key=lambda nv: -len(nv[1] or ""))
    for name, v in names:
        for form in {v, v.replace("\n", ", ")} if v and len(v) > 3 else ():
            t = re.sub(re.escape(form), lambda m, n=name: _case(n, m.group(0)), t,
                       flags=re.IGNORECASE)
    t = _YEAR.sub("{year}", _ISBN.sub("{isbn}", t))
    if t != s:
        return t
    m = re.match(r"(?i)(by\s*:?\s*)(.+)$", s)
    if m and author and _similar(m.group(2), author):
        return m.group(1) + _case("author", m.group(2))
    for name, v in (("title", title), ("author", author)):
        if v and _similar(s, v):
            return _case(name, s)
    return s


def _page_number(line: str, page_no: int) -> tuple[str, float | None]:
    """``(template, printed - page_no)`` of a page number line; the offset is None when the
    number is unreadable."""
    s = line.strip()
    m = _NUMBER.search(s)
    if m:
        return s[:m.start()] + "{n}" + s[m.end():], int(m.group()) - page_no
    core = s.strip(".-– ")
    if core and _ROMAN.fullmatch(core):
        return s.replace(core, "{roman}" if core.islower() else "{ROMAN}", 1), None
    return s, None


def _classify(edited: str, raw: str) -> str:
    if edited.strip() == "" and raw.strip() == "":
        return "line_break" if "\n" in edited or "\n" in raw else "whitespace"
    if LIGATURES & set(edited + raw):
        return "ligature"
    chars = [c for c in edited + raw if not c.isspace()]
    if chars and all(unicodedata.category(c)[0] in "PS" for c in chars):
        return "punctuation"
    return "char_confusion"


def _context(text: str, start: int, end: int) -> str:
    left = text[start - 1] if start > 0 else "^"
    right = text[end] if end < len(text) else "$"
    return ("^" if left == "\n" else left) + "_" + ("$" if right == "\n" else right)


def mine_book(pair: Pair, *, config: MineConfig) -> BookMining:
    """Align one book and collect its patterns (see the module docstring)."""
    t0 = time.perf_counter()
    ed, raw = pair.edited, pair.raw
    a: Alignment = align(ed, raw)
    blocks = cleanup(a.blocks())
    matched = bytearray(len(raw))
    for b in blocks:
        if b.tag == "equal":
            matched[b.hyp_start:b.hyp_end] = b"\x01" * (b.hyp_end - b.hyp_start)
    out = BookMining(row={})
    struct = bytearray(len(raw))        # raw chars that are page furniture
    ed_skip = bytearray(len(ed))        # edited chars already explained (headings)
    pmap = _Map(blocks)

    # chapter headings: the edited heading line and the raw text it aligns to
    n_chapters = 0
    for off in pair.chapter_offsets or ():
        if not 0 <= off < len(ed):
            continue
        end = ed.find("\n", off)
        end = len(ed) if end < 0 else end
        head = ed[off:end]
        if not head.strip() or end - off > 80:
            continue
        h0, h1 = pmap.hyp(off), pmap.hyp(end, end=True)
        best = _best_line(raw, h0, h1, head)
        if best is None:
            continue
        h0, h1 = best
        raw_head = raw[h0:h1].strip()
        n_chapters += 1
        num = _NUMBER.search(head)
        e_t, r_t = head, raw_head
        if num:
            e_t = head[:num.start()] + "{n}" + head[num.end():]
            r_t = re.sub(rf"(?<!\d){num.group()}(?!\d)", "{n}", raw_head, count=1)
        out.add("heading", r_t, e_t, "")
        ed_skip[off:end] = b"\x01" * (end - off)
        struct[h0:h1] = b"\x02" * (h1 - h0)  # 2: explained, but not page furniture
    out.chances["heading"] = n_chapters

    # pages: front matter, running headers, page numbers
    offsets = sorted(set(pair.page_offsets or [0]))
    bounds = [*offsets, len(raw)]
    pages = [(i + 1, bounds[i], bounds[i + 1]) for i in range(len(offsets))]
    front = 0
    for page_no, p0, p1 in pages:
        n_text = len(re.sub(r"\s+", "", raw[p0:p1]))
        if not n_text:
            continue
        # matched characters of the page (whitespace matched or not hardly counts)
        share = matched.count(1, p0, p1) / n_text
        if share > config.front_max_matched or page_no == len(pages):
            break
        front += 1
        lines = [raw[m.start():m.end()].strip() for m in _LINE.finditer(raw, p0, p1)]
        lines = [ln for ln in lines if ln]
        tpl = "\n".join(template(ln, title=pair.title, author=pair.author) for ln in lines)
        out.add("front_matter", tpl, "", f"page {front}", value=len(lines))
        struct[p0:p1] = b"\x01" * (p1 - p0)
    body_pages = pages[front:]
    for page_no, p0, p1 in body_pages:
        parity = "even" if page_no % 2 == 0 else "odd"
        out.chances[f"pages:{parity}"] += 1
        lines = [(m.start(), m.end()) for m in _LINE.finditer(raw, p0, p1)
                 if raw[m.start():m.end()].strip()]

        def unmatched(l0: int, l1: int) -> bool:
            n = sum(1 for i in range(l0, l1) if not raw[i].isspace())
            return n > 0 and not struct[l0] and \
                sum(matched[i] for i in range(l0, l1) if not raw[i].isspace()) <= 0.5 * n

        def numberlike(l0: int, l1: int, *, garbled: bool) -> bool:
            # a page number: short, with digits or a roman numeral; at a page foot also a
            # few garbled characters (Tesseract reads a lone "2" as "Nn." or "i)")
            s = raw[l0:l1].replace(" ", "")
            if len(s) > config.page_number_chars:
                return False
            return (any(c.isdigit() for c in s) or bool(_ROMAN.fullmatch(s.strip(".-")))
                    or (garbled and len(s) <= 4))

        top = []
        for l0, l1 in lines[:config.header_lines]:
            if not unmatched(l0, l1):
                break
            top.append((l0, l1))
        if top and numberlike(*top[0], garbled=False):
            l0, l1 = top.pop(0)
            tpl, off = _page_number(raw[l0:l1], page_no)
            out.add("page_number", tpl, "", "top", value=off)
            struct[l0:l1] = b"\x01" * (l1 - l0)
        if top:
            h0, h1 = top[0][0], top[-1][1]
            text = "\n".join(raw[l0:l1].strip() for l0, l1 in top)
            joined = text.replace("\n", " ")
            if pair.author and _similar(joined, pair.author):
                tpl = _case("author", joined)
            elif pair.title and _similar(joined, pair.title):
                tpl = _case("title", joined)
            else:
                tpl = "\n".join(template(raw[l0:l1], title=pair.title, author=pair.author)
                                for l0, l1 in top)
            out.add("running_header", tpl, "", f"top:{parity}", value=len(top))
            struct[h0:h1] = b"\x01" * (h1 - h0)
        if len(lines) > len(top) + 1:
            l0, l1 = lines[-1]
            if unmatched(l0, l1) and numberlike(l0, l1, garbled=True):
                tpl, off = _page_number(raw[l0:l1], page_no)
                out.add("page_number", tpl, "", "bottom", value=off)
                struct[l0:l1] = b"\x01" * (l1 - l0)

    # The text itself: the raw text without its furniture, pages joined as OCR joins them,
    # aligned again. Its edits are what OCR did to the text, counted below; aligned without
    # the furniture, no chance match with a header's letters can shift them.
    body_raw, joins, heads = _body_text(raw, struct)
    out.chances["page_break"] = len(joins)
    body = align(ed, body_raw, words=False)
    head_mask = bytearray(len(body_raw))
    for h0, h1 in heads:
        head_mask[h0:h1] = b"\x01" * (h1 - h0)
    line_lens = [len(m.group()) for m in _LINE.finditer(raw)]
    _char_patterns(out, ed, body_raw, cleanup(body.blocks()), head_mask, ed_skip, joins,
                   line_lens, config)
    n_struct = struct.count(1)
    out.row = {
        "book_id": pair.book_id, "cer": a.cer, "wer": a.wer, "n_ref_chars": a.ref_len,
        "n_ops": a.distance, "n_substitutions": a.n_replace, "n_insertions": a.n_insert,
        "n_deletions": a.n_delete, "n_hyp_chars": a.hyp_len, "n_ref_words": a.ref_words,
        "word_distance": a.word_distance, "n_pages": len(pages), "structure_chars": n_struct,
        "body_cer": body.cer, "seconds": time.perf_counter() - t0,
    }
    return out


def _body_text(raw: str, struct: bytearray) -> tuple[str, list[int], list[tuple[int, int]]]:
    """The raw text without its furniture (``struct == 1``): where furniture was cut out,
    the text on both sides is joined by :data:`~catalog.rules.PAGE_SEPARATOR`, as OCR
    joins a scan's pages.

    Returns:
        ``(text, joins, headings)``: the text, the end of every join's separator, and
        the heading ranges (``struct == 2``) in the text's coordinates.
    """
    parts: list[str] = []
    joins: list[int] = []
    heads: list[tuple[int, int]] = []
    n = prev = 0
    for m in re.finditer(rb"[^\x01]+", struct):
        s, e = m.span()
        seg = raw[s:e]
        if s > prev or not parts:  # furniture was cut before this run (or it is the start)
            lead = len(seg) - len(seg.lstrip())
            seg, s = seg[lead:], s + lead
            if not seg:
                prev = e
                continue
            if parts:
                tail = parts[-1].rstrip()
                n -= len(parts[-1]) - len(tail)
                parts[-1] = tail
                parts.append(PAGE_SEPARATOR)
                n += len(PAGE_SEPARATOR)
                joins.append(n)
        for h in re.finditer(rb"\x02+", struct[s:e]):
            heads.append((n + h.start(), n + h.end()))
        parts.append(seg)
        n += len(seg)
        prev = e
    return "".join(parts).rstrip(), joins, heads


def _char_patterns(out: BookMining, ed: str, raw: str, blocks: list[Block],
                   head_mask: bytearray, ed_skip: bytearray, joins: list[int],
                   line_lens: list[int], config: MineConfig) -> None:
    """Count the edits of the text itself (``raw`` is the text without its furniture)."""
    for b in blocks:
        if b.tag == "equal":
            continue
        e = ed[b.ref_start:b.ref_end]
        if any(ed_skip[b.ref_start:b.ref_end]) or any(head_mask[b.hyp_start:b.hyp_end]):
            continue  # a chapter heading, counted as such
        r = raw[b.hyp_start:b.hyp_end]
        # a block touching a page join: ending inside its separator or right before it
        k = bisect_right(joins, b.hyp_end + len(PAGE_SEPARATOR))
        at_join = k > 0 and joins[k - 1] >= b.hyp_start
        if at_join and not e.strip() and not r.strip():
            out.add("line_break", r, e, "page_break")
            continue
        m = _HYPHEN_BREAK.search(r)
        if m and "\n" not in e:
            rest = r[:m.start()] + r[m.end():]
            ws = e.strip() == "" and e != "" and rest.strip() == ""
            ctx = "at_space" if ws else "word"
            word_l, word_r = _word_around(ed, b.ref_start)
            frac = len(word_l) / max(1, len(word_l) + len(word_r))
            brk = r[m.start():m.end()]
            if at_join:  # a word broken across two pages: the break, then the page join
                out.add("line_break", brk[2:], "", "page_break")
                brk = brk[:2]
            out.add("hyphenation", brk, "", ctx, value=frac)
            out.chances["line_ends"] += 1
            if not ws and (rest or e):
                _char_edit(out, ed, b.ref_start, b.ref_end, e, rest, config, line_lens)
            continue
        if (not e and r.strip() == "" and "\n" in r and b.ref_start > 0
                and ed[b.ref_start - 1] in "-\u2010\u2011"):
            out.add("hyphenation", r, "", "at_hyphen")
            out.chances["line_ends"] += 1
            continue
        if e.strip() == "" and r.strip() == "":
            _ws_edit(out, e, r, ed, b.ref_start, line_lens)
            continue
        # an edit run next to a changed space ("modern " -> "modem\n"): the confusion and
        # the line break are two patterns
        e0, r0 = len(e) - len(e.lstrip()), len(r) - len(r.lstrip())
        lead = (e[:e0], r[:r0]) if e0 and r0 else ("", "")
        e1, r1 = len(e.rstrip()), len(r.rstrip())
        trail = (e[e1:], r[r1:]) if e1 < len(e) and r1 < len(r) else ("", "")
        core_e = e[len(lead[0]):len(e) - len(trail[0])]
        core_r = r[len(lead[1]):len(r) - len(trail[1])]
        start = b.ref_start
        if lead[0]:
            _ws_edit(out, lead[0], lead[1], ed, start, line_lens)
        c0 = start + len(lead[0])
        while core_e and core_r and core_e[0] == core_r[0]:  # folded chance matches
            core_e, core_r, c0 = core_e[1:], core_r[1:], c0 + 1
        while core_e and core_r and core_e[-1] == core_r[-1]:
            core_e, core_r = core_e[:-1], core_r[:-1]
        if core_e or core_r:
            if core_e.strip() == "" and core_r.strip() == "":
                _ws_edit(out, core_e, core_r, ed, c0, line_lens)
            else:
                _char_edit(out, ed, c0, c0 + len(core_e), core_e, core_r, config,
                           line_lens)
        if trail[0]:
            _ws_edit(out, trail[0], trail[1], ed, b.ref_end - len(trail[0]), line_lens)


def _ws_edit(out: BookMining, e: str, r: str, ed: str, r0: int, line_lens: list[int]) -> None:
    """A whitespace-only edit: a line break pattern, or a space pattern in its context."""
    if "\n" not in e and "\n" not in r:
        out.add("whitespace", r, e, _context(ed, r0, r0 + len(e)))
    elif e == " " and r == "\n":
        out.add("line_break", r, e, "wrap", value=statistics.fmean(line_lens or [0]))
        out.chances["line_ends"] += 1
    elif " " in e and "\n" not in e and "\n\n" in r:
        out.add("line_break", r, e, "block_split")
        out.chances["line_ends"] += 1
    elif e == "\n\n" and r == "\n":
        out.add("line_break", r, e, "paragraph_join")
    else:
        out.add("line_break", r, e, "")


def _best_line(raw: str, h0: int, h1: int, head: str) -> tuple[int, int] | None:
    """The raw line within ``[h0, h1]`` (widened to whole lines) that reads most like the
    edited heading ``head``, if it is close enough."""
    from rapidfuzz import fuzz

    lo = raw.rfind("\n", 0, h0) + 1
    hi = raw.find("\n", h1)
    hi = len(raw) if hi < 0 else hi
    want = head.casefold().strip()
    best, score = None, 60.0
    for m in _LINE.finditer(raw, lo, hi):
        got = m.group().casefold().strip()
        if got and len(got) <= 2 * len(want) + 5:
            sc = fuzz.ratio(got, want)
            if sc >= score:
                best, score = (m.start(), m.end()), sc
    return best


def _word_around(text: str, pos: int) -> tuple[str, str]:
    i = pos
    while i > 0 and text[i - 1].isalpha():
        i -= 1
    j = pos
    while j < len(text) and text[j].isalpha():
        j += 1
    return text[i:pos], text[pos:j]


def _char_edit(out: BookMining, ed: str, r0: int, r1: int, e: str, r: str,
               config: MineConfig, line_lens: list[int]) -> None:
    if max(len(e), len(r)) <= config.max_pattern:
        out.add(_classify(e, r), r, e, _context(ed, r0, r1))
        return
    # a long run: its single-character edits, aligned exactly within the run, unless the
    # two sides differ as wholes (a corrected passage, a lost line): that is no confusion
    from rapidfuzz.distance import Levenshtein

    ops = Levenshtein.editops(e, r).as_list()
    if len(ops) >= 8 and len(ops) > 0.5 * max(len(e), len(r)):
        out.add("unaligned_text", r[:200], e[:200], "", value=len(e))
        return
    for tag, i, j in ops:
        if tag == "replace":
            ee, rr, s, t = e[i], r[j], r0 + i, r0 + i + 1
        elif tag == "delete":
            ee, rr, s, t = e[i], "", r0 + i, r0 + i + 1
        else:
            ee, rr, s, t = "", r[j], r0 + i, r0 + i
        if ee.strip() == "" and rr.strip() == "":
            _ws_edit(out, ee, rr, ed, s, line_lens)
        else:
            out.add(_classify(ee, rr), rr, ee, _context(ed, s, t))


# ---- all books ----------------------------------------------------------------------------

def _config(config: MineConfig) -> MineConfig:
    return config  # a worker's state: the options, handed over once


def _mine_books(config: MineConfig, batch: list[Pair]) -> list[BookMining]:
    """The worker function: each pair's alignment row and observations."""
    return [mine_book(p, config=config) for p in batch]


def _as_pairs(pairs: Iterable[Pair] | Mapping[str, tuple[str, str]]) -> list[Pair]:
    if isinstance(pairs, Mapping):
        return [p if isinstance(p, Pair) else Pair(book_id=b, edited=p[0], raw=p[1])
                for b, p in pairs.items()]
    return list(pairs)


def _occurrences(texts: list[str], keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Occurrences (overlapping) of ``L + edited + R`` in the edited texts, ``^``/``$``
    matching a line edge or the text's start/end."""
    padded = ["\n" + t + "\n" for t in texts]
    needles = {}
    for edited, ctx in keys:
        left, _, right = ctx.partition("_")
        needles[(edited, ctx)] = (("\n" if left == "^" else left) + edited
                                  + ("\n" if right == "$" else right))
    lengths = {len(n) for n in needles.values()}
    # One regex scan per needle, or one pass over every window per needle length: the
    # cheaper of the two (a window costs ~30 times a regex step).
    if len(needles) <= 30 * len(lengths):
        found = {}
        for key, needle in needles.items():
            pat = re.compile("(?=" + re.escape(needle) + ")")
            found[key] = sum(len(pat.findall(t)) for t in padded)
        return found
    wanted = set(needles.values())
    counts: Counter = Counter()
    for m in lengths:
        for t in padded:
            counts.update(w for w in map(t.__getitem__, map(slice, range(len(t) - m + 1),
                                                               range(m, len(t) + 1)))
                          if w in wanted)
    return {key: counts[needle] for key, needle in needles.items()}


def mine(pairs: Iterable[Pair] | Mapping[str, tuple[str, str]], *,
         config: MineConfig = MineConfig(), texts_version: int | None = None,
         executor: Executor | None = None, failures: dict[str, str] | None = None,
         ) -> tuple[pa.Table, pa.Table]:
    """Align every pair and mine its artifacts (pure: no I/O).

    Args:
        pairs: :class:`Pair` objects, or ``{book_id: (edited, raw)}`` (one page each).
        config: Mining options.
        texts_version: The ``texts`` version the pairs were read from (stored in both tables).
        executor: Where the books are aligned (default: as ``config`` says).
        failures: Where to put ``{book_id: reason}`` of pairs that cannot be mined (they are
            left out); without it such a pair is an error.

    Returns:
        ``(alignments, artifacts)`` as Arrow tables with the catalog schemas; artifacts
        sorted by kind, then count (descending).

    Raises:
        CorpusError: a pair cannot be mined and ``failures`` is None.
    """
    todo = _as_pairs(pairs)
    executor = executor or make_executor(config.executor, workers=config.workers,
                                         address=config.ray_address)
    got = list(executor.map(_mine_books, [[p] for p in todo], setup=_config,
                            setup_args=(config,), desc="mine", unit="book",
                            total=len(todo), key=lambda p: p.book_id, inline_below=4))
    bad = {out.key: out.reason for out in got if isinstance(out, Failed)}
    if bad and failures is None:
        raise CorpusError(f"mine: {len(bad)} book(s) cannot be mined, e.g. "
                          f"{next(iter(bad))}: {next(iter(bad.values()))}")
    if bad:
        failures.update(bad)
        todo = [p for p in todo if p.book_id not in bad]
    books = [out for out in got if not isinstance(out, Failed)]
    rows = []
    for p, bm in zip(todo, books, strict=True):
        rows.append({**bm.row, "raw_variant": config.raw_variant, "texts_version": texts_version,
                     "reference": p.reference})
    alignments = pa.Table.from_pylist(rows, schema=TABLES["alignments"].schema)
    artifacts = _aggregate(todo, books, texts_version, config.raw_variant)
    return alignments, artifacts


def _aggregate(pairs: list[Pair], books: list[BookMining], texts_version: int | None,
               raw_variant: str) -> pa.Table:
    count: Counter = Counter()
    nbooks: Counter = Counter()
    vsum: dict = defaultdict(float)
    vn: Counter = Counter()
    chances: Counter = Counter()
    for bm in books:
        chances.update(bm.chances)
        for key, (c, s, n) in bm.seen.items():
            count[key] += c
            nbooks[key] += 1
            vsum[key] += s
            vn[key] += n
    texts = [p.edited for p in pairs]
    char_keys = {(e, ctx) for (k, _, e, ctx) in count
                 if k in ("char_confusion", "punctuation", "ligature", "whitespace")}
    occ = _occurrences(texts, char_keys)
    n_spaces = sum(t.count(" ") for t in texts)
    n_paras = sum(t.count("\n\n") for t in texts)
    n_chars = sum(len(t) for t in texts)
    rows = []
    for key, c in count.items():
        kind, raw, edited, ctx = key
        if kind in ("char_confusion", "punctuation", "ligature", "whitespace"):
            opp = occ.get((edited, ctx), 0)
        elif kind in ("front_matter", "unaligned_text"):
            opp = len(pairs)
        elif kind == "running_header":
            opp = chances[f"pages:{ctx.split(':')[-1]}"]
        elif kind == "page_number":
            opp = chances["pages:even"] + chances["pages:odd"]
        elif kind == "heading":
            opp = chances["heading"]
        elif kind == "hyphenation":
            opp = chances["line_ends"]
        elif ctx == "page_break":
            opp = chances["page_break"]
        elif ctx in ("wrap", "block_split"):
            opp = n_spaces
        elif ctx == "paragraph_join":
            opp = n_paras
        else:
            opp = sum(t.count(edited) for t in texts) if edited else n_chars
        opp = max(opp, c)  # an edit seen is an opportunity, whatever the text says
        rows.append({"kind": kind, "raw": raw, "edited": edited, "context": ctx, "count": c,
                     "opportunities": opp, "probability": c / opp if opp else None,
                     "n_books": nbooks[key],
                     "value": vsum[key] / vn[key] if vn[key] else None,
                     "texts_version": texts_version, "raw_variant": raw_variant})
    rows.sort(key=lambda r: (r["kind"], -r["count"], r["raw"], r["edited"], r["context"]))
    return pa.Table.from_pylist(rows, schema=TABLES["artifacts"].schema)


def top_confusions(rows: Iterable[Mapping], edited_texts: Sequence[str], *,
                   n: int = 20) -> list[dict]:
    """The most frequent character-level patterns over all contexts.

    Args:
        rows: ``artifacts`` rows.
        edited_texts: The edited texts mined (for the context-free opportunities).
        n: How many to return.

    Returns:
        ``[{kind, edited, raw, count, opportunities, probability, n_books}]``, most frequent
        first; ``opportunities`` = occurrences of ``edited`` in the texts (characters, for an
        insertion), ``n_books`` = the most books any one context was seen in.
    """
    agg: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        if r["kind"] not in ("char_confusion", "punctuation", "ligature", "whitespace"):
            continue
        a = agg.setdefault((r["kind"], r["edited"], r["raw"]), {
            "kind": r["kind"], "edited": r["edited"], "raw": r["raw"], "count": 0,
            "n_books": 0})
        a["count"] += r["count"]
        a["n_books"] = max(a["n_books"], r["n_books"])
    top = sorted(agg.values(), key=lambda a: (-a["count"], a["edited"], a["raw"]))[:n]
    n_chars = sum(len(t) for t in edited_texts)
    for a in top:
        opp = sum(t.count(a["edited"]) for t in edited_texts) if a["edited"] else n_chars
        a["opportunities"] = max(opp, a["count"])
        a["probability"] = a["count"] / a["opportunities"]
    return top


# ---- the driver ---------------------------------------------------------------------------

@dataclass
class MineReport:
    """What one ``corpus mine`` run did."""

    books: int = 0
    seconds: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)
    cer: float | None = None
    body_cer: float | None = None
    wer: float | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    top: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # book_id -> reason
    executor: dict = field(default_factory=dict)  # where it ran (Executor.summary)


def read_pairs(lakehouse: Lakehouse, *, config: MineConfig,
               versions: Mapping[str, int]) -> list[Pair]:
    """The pairs to mine from pinned ``texts`` (and ``books``, for titles and authors)."""
    import pyarrow.dataset as pads

    # the clean text of a book: its reference (edited) text, else the fallback (corrected)
    refs = [config.reference] + ([config.fallback] if config.fallback and config.fallback
                                 not in (config.reference, config.raw_variant) else [])
    texts = lakehouse.read(
        "texts", version=versions["texts"],
        columns=["book_id", "variant", "text", "chapter_offsets", "page_offsets"],
        filter=pads.field("variant").isin([*refs, config.raw_variant]))
    meta = {}
    if "books" in versions:
        meta = {b["book_id"]: b for b in lakehouse.read(
            "books", version=versions["books"], columns=["book_id", "title", "author"]
        ).to_pylist()}
    by: dict[str, dict[str, dict]] = defaultdict(dict)
    for t in texts.to_pylist():
        if t["variant"] in (*refs, config.raw_variant):
            by[t["book_id"]][t["variant"]] = t
    pairs = []
    for book_id in sorted(by):
        v = by[book_id]
        reference = next((r for r in refs if r in v), None)
        if reference is None or config.raw_variant not in v:
            continue
        ref, raw = v[reference], v[config.raw_variant]
        m = meta.get(book_id) or {}
        pairs.append(Pair(book_id=book_id, edited=ref["text"], raw=raw["text"],
                          page_offsets=raw.get("page_offsets") or (),
                          chapter_offsets=ref.get("chapter_offsets") or (),
                          title=m.get("title"), author=m.get("author"),
                          reference=reference))
    return pairs


def run_mine(lakehouse: Lakehouse, *, config: MineConfig) -> MineReport:
    """Mine every book with both variants; overwrite ``alignments`` and ``artifacts``.

    Both commits record ``{texts: version, books: version}`` as their inputs.
    """
    t0 = time.perf_counter()
    try:
        pins = lakehouse.pin("texts")
    except TableNotFoundError:
        raise CorpusError("No texts yet: run `corpus ingest SHARE` and `corpus ocr` first.") \
            from None
    with contextlib.suppress(TableNotFoundError):  # titles/authors make nicer templates
        pins.update(lakehouse.pin("books"))
    pairs = read_pairs(lakehouse, config=config, versions=pins)
    if not pairs:
        raise CorpusError(f"No book has both a {config.reference!r} and a {config.raw_variant!r} "
                          f"text in texts@{pins['texts']}: run `corpus ocr` first (or pick "
                          "another --variant).")
    executor = make_executor(config.executor, workers=config.workers,
                             address=config.ray_address)
    failed: dict[str, str] = {}
    alignments, artifacts = mine(pairs, config=config, texts_version=pins["texts"],
                                 executor=executor, failures=failed)
    if not alignments.num_rows:
        raise CorpusError(f"mine: none of the {len(pairs)} book(s) could be mined, e.g. "
                          f"{next(iter(failed.items()))}.")
    pairs = [p for p in pairs if p.book_id not in failed]
    opts = {k: v for k, v in asdict(config).items()
            if k not in ("workers", "executor", "ray_address")}
    lineage = Lineage(operation="mine", inputs=pins, config={
        **opts, "executor": executor.describe(), "failed": len(failed),
        "failures": dict(sorted(failed.items())[:FAILURES_KEPT])})
    # Only this variant's rows are replaced: mining a noisy variant keeps the OCR patterns.
    only = "raw_variant = '" + config.raw_variant.replace("'", "''") + "'"
    versions = {
        "alignments": lakehouse.overwrite("alignments", alignments, lineage=lineage,
                                          predicate=only),
        "artifacts": lakehouse.overwrite("artifacts", artifacts, lineage=lineage,
                                         predicate=only),
    }
    rows = alignments.to_pylist()
    n_ref = sum(r["n_ref_chars"] for r in rows) or 1
    kinds = Counter()
    for r in artifacts.to_pylist():
        kinds[r["kind"]] += r["count"]
    top = top_confusions(artifacts.to_pylist(), [p.edited for p in pairs])
    return MineReport(
        books=len(pairs), seconds=time.perf_counter() - t0, versions=versions, inputs=pins,
        cer=sum(r["n_ops"] for r in rows) / n_ref,
        body_cer=sum(r["body_cer"] * r["n_ref_chars"] for r in rows) / n_ref,
        wer=sum(r["word_distance"] for r in rows) / max(1, sum(r["n_ref_words"] for r in rows)),
        kinds=dict(kinds), top=top, failed=failed, executor=executor.summary())
