"""Noisy variants of edited books: `corpus noise`.

:func:`noisy_text` (pure) turns one edited text into a raw-looking one: it sets the book
in pages (title/copyright page, lines of the mined width with hyphenated line ends, running
headers, page numbers, the blank lines OCR puts between blocks, pages joined by the
separator OCR joins a scan's pages with), then damages the set text
with the mined character confusions at the book's own error level. It works chunk by chunk
(about ``chunk_chars`` characters, cut at paragraph ends), so a book never needs more than a
few times its size in memory, and it is deterministic: every random choice comes from one
generator seeded from ``(seed, book_id)`` with a stable hash.

:func:`run_noise` (driver) builds the model from pinned ``artifacts`` and ``alignments``
versions and maps the books over an executor (:mod:`catalog.executor`: a local process pool
or a Ray cluster; the model is handed to each worker once). Each worker writes its batch's
variants as a Parquet file into ``texts`` (:mod:`catalog.datafiles`: the texts never travel
back to the driver); the driver commits every file in ONE ``texts`` commit as
``noisy/<recipe>-v<N>/<seed>`` (:func:`catalog.rules.noisy_variant`; ``N`` is the
``artifacts`` version the model came from), with lineage. A rerun replaces its rows in that
same commit. A book whose variant cannot be made is reported with its reason and counted in
the commit's lineage (``failed``, ``failures``); the others are written.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from catalog import (
    ConfigError,
    CorpusError,
    Lakehouse,
    LakehouseConfig,
    Lineage,
    TableNotFoundError,
)
from catalog.executor import Executor, Failed, check_executor, make_executor
from catalog.rules import EDITED, OCR, PAGE_SEPARATOR, noisy_variant
from noise.model import NoiseModel, PageLayout, fill, isbn_hyphenated

log = logging.getLogger(__name__)

RECIPES = ("mined", "uniform")
FAILURES_KEPT = 20           # failed books named in a commit's lineage (all are counted)
CHUNK_CHARS = 1 << 18        # ~256k characters of edited text per chunk
# a worker's batch: up to this many chunks of edited text (~1M characters): few enough
# batches that the executor's per-batch cost and the data files stay small in number
BATCH_CHUNKS = 4
_LINE = re.compile(r"[^\n]+")


@dataclass(frozen=True)
class BookMeta:
    """What the page furniture of a book shows."""

    book_id: str
    title: str = ""
    author: str = ""


@dataclass(frozen=True)
class NoisyText:
    """One generated variant."""

    text: str
    page_offsets: list[int]
    chapter_offsets: list[int]
    level: float  # the character error rate this book was given


def book_seed(seed: int, book_id: str) -> int:
    """A 64-bit seed for one book, stable across processes and Python versions.

    (Python's ``hash`` of a string is salted per process, so it must not be used here.)
    """
    digest = hashlib.blake2b(f"{seed}\x00{book_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def book_rng(seed: int, book_id: str) -> np.random.Generator:
    """The random generator of one book's variant."""
    return np.random.Generator(np.random.PCG64(book_seed(seed, book_id)))


class _Draws:
    """Uniform draws taken from ``rng`` in blocks (a scalar call per decision is slow)."""

    def __init__(self, rng: np.random.Generator, block: int = 64):
        self._rng, self._block = rng, block
        self._buf: list[float] = []

    def _refill(self) -> None:
        # blocks grow: a short book draws little, a long one in few calls; new values go
        # in front, so draws keep coming in the order they were generated
        self._buf = self._rng.random(self._block).tolist()[::-1] + self._buf
        self._block = min(self._block * 2, 8192)

    def __call__(self) -> float:
        if not self._buf:
            self._refill()
        return self._buf.pop()

    def many(self, k: int) -> list[float]:
        """The next ``k`` draws (the same values ``k`` calls would give)."""
        while len(self._buf) < k:
            self._refill()
        out = self._buf[len(self._buf) - k:][::-1]
        del self._buf[len(self._buf) - k:]
        return out


def _pick(options: Sequence[tuple], u: float, weight: int = -1):
    """The option whose cumulative probability band holds ``u`` (None past the total)."""
    acc = 0.0
    for opt in options:
        acc += opt[weight]
        if u < acc:
            return opt
    return None


@dataclass
class _Typesetter:
    """Sets paragraphs into lines and pages; state carries across chunks."""

    layout: PageLayout
    meta: BookMeta
    draw: _Draws
    year: int
    page: int = 0          # pages started so far (1-based number of the current page)
    lines: int = 0         # text lines on the current page
    breaks: int = 0        # line ends inside paragraphs
    feasible: int = 0      # of which the overflowing word could have been hyphenated
    buf: list[str] = field(default_factory=list)
    size: int = 0          # characters in buf
    pages: list[int] = field(default_factory=list)  # page starts in the current chunk
    filled: dict[str, str] = field(default_factory=dict)  # templates without a number
    title_page: bool = False  # the current page is the title/copyright page

    def emit(self, s: str) -> None:
        self.buf.append(s)
        self.size += len(s)

    def take(self) -> tuple[str, list[int]]:
        text, pages = "".join(self.buf), self.pages
        self.buf, self.size, self.pages = [], 0, []
        return text, pages

    def _fill(self, template: str, n: int | None = None) -> str:
        if "{" not in template:
            return template
        numbered = "{n}" in template or "{roman}" in template or "{ROMAN}" in template
        if not numbered and template in self.filled:  # a running header: same every page
            return self.filled[template]
        out = fill(template, title=self.meta.title, author=self.meta.author,
                   isbn=self.isbn, year=self.year, n=self.page if n is None else n)
        if not numbered:
            self.filled[template] = out
        return out

    @functools.cached_property
    def isbn(self) -> str:
        return isbn_hyphenated(self.meta.book_id)

    def _number(self, position: str) -> None:
        options = [o for o in self.layout.page_numbers if o[0] == position]
        if not options:
            return
        got = _pick([(t, off, p) for _, t, p, off in options], self.draw())
        if got and self.page + got[1] >= 1:  # no number on pages before page 1
            line = self._fill(got[0], n=self.page + got[1])
            self.emit(line + "\n\n" if position == "top" else "\n\n" + line)

    def new_page(self) -> None:
        lay = self.layout
        if self.page:
            if self.lines and not self.title_page:  # a title page carries no number
                self._number("bottom")
            self.emit(PAGE_SEPARATOR)  # pages joined as OCR joins a scan's pages
        self.title_page = False
        self.page += 1
        self.lines = 0
        self.pages.append(self.size)
        parity = "even" if self.page % 2 == 0 else "odd"
        options = [(t, p) for par, t, p in lay.headers if par == parity]
        got = _pick(options, self.draw()) if options else None
        if got:
            self.emit(self._fill(got[0]) + "\n\n")
        self._number("top")

    def front_matter(self) -> None:
        lay = self.layout
        got = _pick(lay.front_matter, self.draw()) if lay.front_matter else None
        if not got:
            return
        self.page += 1
        self.pages.append(self.size)
        lines = [ln for ln in self._fill(got[0]).split("\n") if ln.strip()]
        for i, ln in enumerate(lines):
            if i:
                self.emit("\n" if self.draw() < lay.paragraph_joined else "\n\n")
            self.emit(ln)
        self.lines = lay.lines_per_page  # the body starts on a new page
        self.title_page = True

    def line(self, s: str, sep: str) -> int:
        """Put one printed line on the page after separator ``sep``; returns its offset."""
        if self.page == 0 or self.lines >= self.layout.lines_per_page:
            self.new_page()  # the page break replaces the separator
        else:
            self.emit(sep)
        at = self.size
        self.emit(s)
        self.lines += 1
        return at

    def heading(self, par: str) -> str:
        """A chapter heading as the scans print it (``Chapter 3`` -> ``CHAPTER 3``)."""
        if len(par) > 40:
            return par
        for rx, outs in self.layout.heading_rules:
            m = rx.match(par)
            if m:
                got = _pick(outs, self.draw())
                if got is None:
                    return par
                n = int(m.group("n")) if "n" in rx.groupindex else 0
                return self._fill(got[0], n=n)
        return par

    def paragraph(self, par: str, first_sep: str) -> int:
        """Set one paragraph; returns the offset of its first line in the chunk."""
        lay = self.layout
        width = lay.line_width
        draw = self.draw
        if len(par) <= 40 and lay.headings:
            par = self.heading(par)
        pieces = []
        start, n = 0, len(par)
        while n - start > width:
            cut = par.rfind(" ", start, start + width + 1)
            if cut <= start:  # one word longer than a line: cut it hard
                pieces.append(par[start:start + width])
                start += width
                continue
            self.breaks += 1
            if lay.hyphenation:
                end = par.find(" ", cut + 1)
                word = par[cut + 1:n if end < 0 else end]
                alpha = len(word.rstrip(".,;:!?\"'’”)"))
                k = min(start + width - cut - 2, alpha - 2)  # letters that fit, hyphen too
                if alpha >= 5 and k >= 2 and word[:k + 1].isalpha():
                    self.feasible += 1
                    # the mined share is per line end; only feasible ends can take one
                    if draw() < lay.hyphenation * self.breaks / self.feasible:
                        pieces.append(par[start:cut + 1 + k] + "-")
                        start = cut + 1 + k
                        continue
            pieces.append(par[start:cut])
            start = cut + 1
        pieces.append(par[start:])
        # onto pages: as many lines as the page has room for, then a page break
        lpp, blank = lay.lines_per_page, lay.blank_line
        first_at = -1
        i, sep = 0, first_sep
        while i < len(pieces):
            if self.page == 0 or self.lines >= lpp:
                self.new_page()  # the page break replaces the separator
            else:
                self.emit(sep)
            if first_at < 0:
                first_at = self.size
            part = pieces[i:i + lpp - self.lines]
            if len(part) > 1:
                seps = ["\n\n" if u < blank else "\n" for u in draw.many(len(part) - 1)]
                self.emit(part[0] + "".join(a + b for a, b in zip(seps, part[1:],
                                                                  strict=True)))
            else:
                self.emit(part[0])
            self.lines += len(part)
            i += len(part)
            sep = "\n\n" if draw() < blank else "\n"
        return first_at


def typeset(text: str, *, layout: PageLayout, meta: BookMeta, rng: np.random.Generator,
            chapter_offsets: Sequence[int] = (), chunk_chars: int = CHUNK_CHARS,
            ) -> Iterator[tuple[str, list[int], list[int]]]:
    """Set ``text`` in pages, chunk by chunk.

    Yields ``(chunk, page starts, chapter starts)`` with offsets inside the chunk; chunks
    end at paragraph ends, so a paragraph is never split between two.
    """
    draw = _Draws(rng)
    ts = _Typesetter(layout=layout, meta=meta, draw=draw, year=1850 + int(draw() * 100))
    ts.front_matter()
    chapters = sorted(set(chapter_offsets))
    ci = 0
    chaps: list[int] = []
    prev_end = None
    for m in _LINE.finditer(text):
        par = m.group().strip()
        if not par:
            continue
        if prev_end is None:
            sep = ""
        elif text.count("\n", prev_end, m.start()) >= 2:
            sep = "\n" if draw() < layout.paragraph_joined else "\n\n"
        else:
            sep = "\n"
        prev_end = m.end()
        if ts.size >= chunk_chars and sep != "\n":
            # a chunk ends at a paragraph end; the separator opens the next chunk
            chunk, pages = ts.take()
            yield chunk, pages, chaps
            chaps = []
        at = ts.paragraph(par, sep)
        while ci < len(chapters) and chapters[ci] <= m.start():
            chaps.append(at)
            ci += 1
    while ci < len(chapters):  # chapters starting after the last line (empty ones)
        chaps.append(ts.size)
        ci += 1
    chunk, pages = ts.take()
    yield chunk, pages, chaps


def noisy_text(text: str, *, model: NoiseModel, meta: BookMeta, seed: int,
               chapter_offsets: Sequence[int] = (), cer_scale: float = 1.0,
               chunk_chars: int = CHUNK_CHARS) -> NoisyText:
    """A raw-looking variant of one edited book (pure, deterministic in ``seed``).

    Args:
        text: The edited text.
        model: The noise model.
        meta: Identity, title and author of the book (for its furniture).
        seed: The run's seed; the book's own seed derives from it and ``meta.book_id``.
        chapter_offsets: Chapter starts in ``text``; returned moved into the variant.
        cer_scale: Multiplies the book's drawn character error level.
        chunk_chars: Characters of edited text per chunk.
    """
    rng = book_rng(seed, meta.book_id)
    level = model.draw_level(rng, scale=cer_scale)
    parts: list[str] = []
    pages: list[int] = []
    chapters: list[int] = []
    base = 0
    for chunk, page_starts, chap_starts in typeset(
            text, layout=model.layout, meta=meta, rng=rng, chapter_offsets=chapter_offsets,
            chunk_chars=chunk_chars):
        noisy, moved = model.chars.noise(chunk, rate=level, rng=rng,
                                         offsets=page_starts + chap_starts)
        pages += [base + x for x in moved[:len(page_starts)]]
        chapters += [base + x for x in moved[len(page_starts):]]
        parts.append(noisy)
        base += len(noisy)
    return NoisyText("".join(parts), pages, chapters, level)


@dataclass(frozen=True)
class BookTask:
    """One variant to make: the edited text, the book, the seed, its chapter starts."""

    text: str
    meta: BookMeta
    seed: int
    chapter_offsets: Sequence[int] = ()


def noisy_texts(tasks: Sequence[BookTask], *, model: NoiseModel, cer_scale: float = 1.0,
                chunk_chars: int = CHUNK_CHARS) -> list[NoisyText]:
    """:func:`noisy_text` of many books, byte-identical to one by one.

    Books that fit in one chunk are set first, then their character noise is sampled in one
    vectorised pass over all of them (each still draws from its own generator, in the same
    order as alone); a short book otherwise pays numpy's per-call overhead more than its
    characters. Longer books go through :func:`noisy_text`.
    """
    out: dict[int, NoisyText] = {}
    batch = []  # (index, chunk, page starts, chapter starts, level, rng)
    for i, t in enumerate(tasks):
        if len(t.text) >= chunk_chars // 2:  # a long book: chunk by chunk, on its own
            out[i] = noisy_text(t.text, model=model, meta=t.meta, seed=t.seed,
                                chapter_offsets=t.chapter_offsets, cer_scale=cer_scale,
                                chunk_chars=chunk_chars)
            continue
        rng = book_rng(t.seed, t.meta.book_id)
        level = model.draw_level(rng, scale=cer_scale)
        chunks = iter(typeset(t.text, layout=model.layout, meta=t.meta, rng=rng,
                              chapter_offsets=t.chapter_offsets, chunk_chars=chunk_chars))
        first = next(chunks)
        if next(chunks, None) is not None:  # several chunks after all: start it over alone
            out[i] = noisy_text(t.text, model=model, meta=t.meta, seed=t.seed,
                                chapter_offsets=t.chapter_offsets, cer_scale=cer_scale,
                                chunk_chars=chunk_chars)
            continue
        batch.append((i, *first, level, rng))
    events = model.chars.sample_many([b[1] for b in batch], rates=[b[4] for b in batch],
                                     rngs=[b[5] for b in batch])
    for (i, chunk, pages, chaps, level, _), ev in zip(batch, events, strict=True):
        moved = model.chars.shift(ev, pages + chaps)
        out[i] = NoisyText(model.chars.apply(chunk, ev), moved[:len(pages)],
                           moved[len(pages):], level)
    return [out[i] for i in range(len(tasks))]


_UNIFORM_ALPHABET = np.array([ord(c) for c in
                              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                              ".,;:'\"-!? "], dtype=np.uint32)


def uniform_noise(text: str, *, cer: float, rng: np.random.Generator) -> str:
    """Baseline: every character is hit with probability ``cer`` by a substitution,
    deletion or insertion (one third each) of a uniformly random character."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = len(codes)
    if n == 0 or cer <= 0:
        return text
    hit = np.flatnonzero(rng.random(n) < cer)
    kind = rng.integers(0, 3, len(hit))
    new = _UNIFORM_ALPHABET[rng.integers(0, len(_UNIFORM_ALPHABET), len(hit))]
    parts, prev = [], 0
    for p, k, c in zip(hit.tolist(), kind.tolist(), new.tolist(), strict=True):
        parts.append(text[prev:p])
        if k == 0:      # substitution
            parts.append(chr(c))
            prev = p + 1
        elif k == 1:    # deletion
            prev = p + 1
        else:           # insertion before the character
            parts.append(chr(c))
            prev = p
    parts.append(text[prev:])
    return "".join(parts)


# ---- the driver ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NoiseConfig:
    """Options of ``corpus noise``.

    Attributes:
        recipe: ``mined`` (the model mined from real pairs) or ``uniform`` (baseline:
            uniform random character noise at the real books' mean CER).
        seed: The run's seed; variant ``k`` of a book uses seed ``seed + k``.
        per_book: Variants per book.
        cer_scale: Multiplies every book's drawn error level.
        books: Only the books whose ids match any of these: exact ids or shell patterns
            (``fnmatch.fnmatchcase``, e.g. ``clear-1*``; an id is a pattern matching
            itself). Default: every book with an edited text. A pattern that matches no
            book with an edited text is an error (:func:`select_books`).
        workers: Workers generating books in parallel (None: every core here, every CPU of
            the cluster on Ray).
        chunk_chars: Characters of edited text handled at once (a worker batch holds up to
            :data:`BATCH_CHUNKS` times as many).
        batch_books: At most this many variants per worker batch (one data file each; a
            batch also ends at :data:`BATCH_CHUNKS` chunks of edited text).
        executor: ``local`` (a process pool) or ``ray`` (:mod:`catalog.executor`).
        ray_address: The Ray cluster (default ``CORPUS_RAY_ADDRESS``, else Ray on this
            machine).
    """

    recipe: str = "mined"
    seed: int = 0
    per_book: int = 1
    cer_scale: float = 1.0
    books: tuple[str, ...] = ()
    workers: int | None = 2
    chunk_chars: int = CHUNK_CHARS
    batch_books: int = 256
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got "
                              f"{self.recipe!r}.")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed}.")
        if self.per_book < 1:
            raise ConfigError(f"--per-book must be at least 1, got {self.per_book}.")
        if not 0 <= self.cer_scale <= 20:
            raise ConfigError(f"--cer-scale must be between 0 and 20, got {self.cer_scale}.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}.")
        check_executor(self.executor)
        if self.chunk_chars < 1000:
            raise ConfigError(f"chunk_chars must be at least 1000, got {self.chunk_chars}.")
        if self.batch_books < 1:
            raise ConfigError(f"batch_books must be at least 1, got {self.batch_books}.")


@dataclass
class NoiseReport:
    """What one ``corpus noise`` run wrote."""

    variants: list[str] = field(default_factory=list)
    books: int = 0
    rows: int = 0
    chars_in: int = 0
    chars_out: int = 0
    seconds: float = 0.0
    texts_version: int | None = None
    model: dict = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # "book_id/seed" -> reason
    executor: dict = field(default_factory=dict)
    texts_written: int | None = None  # the texts version of the commit (None: no commit)


def make_batch(tasks: Sequence[tuple[dict, BookMeta, int]], *, model: NoiseModel,
               config: NoiseConfig, uniform_cer: float) -> list[tuple[str, int, NoisyText]]:
    """Variants of a batch of ``(edited row, book, seed)``: ``[(book_id, seed, text)]``."""
    if config.recipe == "uniform":
        level = uniform_cer * config.cer_scale
        return [(meta.book_id, seed, NoisyText(
            uniform_noise(row["text"], cer=level, rng=book_rng(seed, meta.book_id)),
            [], [], level)) for row, meta, seed in tasks]
    outs = noisy_texts(
        [BookTask(row["text"], meta, seed, row.get("chapter_offsets") or ())
         for row, meta, seed in tasks],
        model=model, cer_scale=config.cer_scale, chunk_chars=config.chunk_chars)
    return [(meta.book_id, seed, out) for (_, meta, seed), out in zip(tasks, outs, strict=True)]


@dataclass(frozen=True)
class _Job:
    """A worker's part of a noise run, made once per worker (the model is the big part)."""

    model: NoiseModel
    config: NoiseConfig
    uniform_cer: float
    # for written variants (run_noise): where to write, the names, the shared columns
    lakehouse: LakehouseConfig | None = None
    names: dict[int, str] = field(default_factory=dict)
    edited_version: int | None = None
    created_at: datetime | None = None


def _worker_job(job: _Job) -> _Job:
    return job  # the setup of each worker: the job as it was handed over


def _task_key(task: tuple) -> str:
    return f"{task[1].book_id}/{task[2]}"


def _variants(job: _Job, batch: list) -> list[tuple[str, int, NoisyText]]:
    """The worker function of :func:`generate`: the variants themselves."""
    return make_batch(batch, model=job.model, config=job.config, uniform_cer=job.uniform_cer)


def _write_variants(job: _Job, batch: list) -> list[dict]:
    """The worker function of :func:`run_noise`: a batch's variants written as one data file
    of ``texts`` (not committed); per book what the driver needs (the file on the first)."""
    from catalog.datafiles import write_data_file

    rows, out = [], []
    for (row, _, _), (book_id, seed, text) in zip(batch, _variants(job, batch), strict=True):
        rows.append({"book_id": book_id, "variant": job.names[seed], "text": text.text,
                     "n_chars": len(text.text), "chapter_offsets": text.chapter_offsets or None,
                     "page_offsets": text.page_offsets or None,
                     "derived_from": f"texts@{job.edited_version}:{book_id}/{EDITED}",
                     "created_at": job.created_at})
        out.append({"book_id": book_id, "variant": job.names[seed],
                    "chars_in": len(row["text"]), "chars_out": len(text.text), "file": None})
    out[0]["file"] = write_data_file(job.lakehouse, "texts", rows)
    return out


def _tasks(rows: Iterable[dict], metas: dict[str, BookMeta], config: NoiseConfig) -> Iterator:
    return ((row, metas.get(row["book_id"]) or BookMeta(row["book_id"]), config.seed + k)
            for row in rows for k in range(config.per_book))


def _batches(tasks: Iterable, chars: int, books: int = 64) -> Iterator[list]:
    """Consecutive tasks grouped up to ``chars`` characters or ``books`` books."""
    from catalog.executor import batched

    return batched(tasks, size=books, weight=lambda t: len(t[0]["text"]), limit=chars)


def generate(rows: Iterable[dict], metas: dict[str, BookMeta], *, model: NoiseModel,
             config: NoiseConfig, uniform_cer: float = 0.0, executor: Executor | None = None,
             ) -> Iterator[tuple[str, int, NoisyText] | Failed]:
    """Variants of edited ``texts`` rows, in parallel over books: ``(book_id, seed, text)``,
    or :class:`~catalog.executor.Failed` for a book whose variant cannot be made.

    Short books go to the workers in batches (see :func:`noisy_texts`); output order
    follows input order, and a book's variant does not depend on its batch.
    """
    executor = executor or make_executor(config.executor, workers=config.workers,
                                         address=config.ray_address)
    yield from executor.map(
        _variants, _batches(_tasks(rows, metas, config), BATCH_CHUNKS * config.chunk_chars,
                            config.batch_books),
        setup=_worker_job, setup_args=(_Job(model, config, uniform_cer),), desc="noise",
        unit="variant",
        key=_task_key)


def load_noise_model(lakehouse: Lakehouse, *, artifacts_version: int | None = None,
                     alignments_version: int | None = None, raw_variant: str = OCR,
                     ) -> NoiseModel:
    """The mined noise model at pinned (default: current) table versions, built from the
    rows mined against ``raw_variant`` (the raw variant the model imitates).

    The line width and page size are calibrated on the mined books' edited texts, read at
    the ``texts`` version the mining recorded.
    """
    import pyarrow.compute as pc

    from noise.model import model_from_tables

    try:
        av = lakehouse.version("artifacts") if artifacts_version is None else artifacts_version
        lv = lakehouse.version("alignments") if alignments_version is None \
            else alignments_version
        artifacts = lakehouse.read("artifacts", version=av).to_pylist()
        alignments = lakehouse.read("alignments", version=lv).to_pylist()
    except TableNotFoundError:
        raise CorpusError("No mined artifacts yet: run `corpus mine` first (it needs books "
                          "with both an edited and an ocr text).") from None
    rows = [r for r in alignments if (r.get("raw_variant") or raw_variant) == raw_variant]
    if not rows or not any(a.get("raw_variant", raw_variant) == raw_variant for a in artifacts):
        raise CorpusError(f"No artifacts mined from the {raw_variant!r} variant in "
                          f"artifacts@{av}: run `corpus mine --variant {raw_variant}` first.")
    source = {"artifacts": av, "alignments": lv}
    tv = next((r["texts_version"] for r in rows if r.get("texts_version") is not None), None)
    edited: list[str] = []
    if tv is not None:
        try:
            t = lakehouse.read("texts", version=tv, columns=["book_id", "variant", "text"],
                               filter=pc.field("variant") == EDITED)
            by = dict(zip(t.column("book_id").to_pylist(), t.column("text").to_pylist(),
                          strict=True))
            rows = [r for r in rows if r["book_id"] in by]
            edited = [by[r["book_id"]] for r in rows]
            source["texts"] = tv
        except CorpusError as e:  # e.g. that version was vacuumed away
            log.warning("cannot read texts@%s to calibrate the page layout (%s); using the "
                        "mined mean line length as the width", tv, e)
    return model_from_tables(artifacts, rows, source=source, raw_variant=raw_variant,
                             edited_texts=edited)


def select_books(ids: Iterable[str], patterns: Sequence[str]) -> set[str]:
    """The ``ids`` matching any of ``patterns`` (exact ids or shell patterns).

    Raises:
        CorpusError: A pattern matches none of ``ids`` (a mistyped id or pattern would
            otherwise silently generate nothing for it).
    """
    have = set(ids)
    chosen: set[str] = set()
    unmatched: set[str] = set()
    for p in patterns:
        got = {p} & have  # an exact id counts even when it holds "[", "?" or "*"
        if any(c in p for c in "*?["):  # only a pattern needs a pass over every id
            got |= {b for b in have if fnmatch.fnmatchcase(b, p)}
        if not got:
            unmatched.add(p)
        chosen |= got
    if unmatched:
        missing = sorted(unmatched)
        raise CorpusError(f"No edited text for book(s) {missing[:5]}"
                          f"{' ...' if len(missing) > 5 else ''}: list the books with "
                          "`corpus sql \"SELECT book_id FROM texts WHERE variant = "
                          "'edited'\"`.")
    return chosen


def _edited_ids(lakehouse: Lakehouse, version: int) -> tuple[list[str], set[str]]:
    """Books with an edited text, and every variant name the table holds."""
    ids, variants = [], set()
    for b in lakehouse.dataset("texts", version).to_batches(columns=["book_id", "variant"]):
        vs = b.column("variant").to_pylist()
        variants.update(vs)
        ids += [i for i, v in zip(b.column("book_id").to_pylist(), vs, strict=True)
                if v == EDITED]
    return ids, variants


def _edited_rows(lakehouse: Lakehouse, version: int, wanted: set[str] | None,
                 ) -> Iterator[dict]:
    """The edited texts, streamed in small record batches (never the whole table).

    A data file's variants are read first: a file without an edited text (the variants
    earlier noise runs wrote) is never decoded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for frag in lakehouse.dataset("texts", version).get_fragments():
        variants = frag.to_table(columns=["variant"]).column("variant").cast(pa.string())
        keep = pc.equal(variants, EDITED).to_pylist()
        if not any(keep):
            continue
        at = 0
        for b in frag.to_batches(columns=["book_id", "text", "chapter_offsets"],
                                 batch_size=32):
            mine = keep[at:at + b.num_rows]
            at += b.num_rows
            if not any(mine):
                continue
            ids = b.column("book_id").to_pylist()
            for i in (i for i, k in enumerate(mine) if k):
                if wanted is None or ids[i] in wanted:
                    yield {"book_id": ids[i], "text": b.column("text")[i].as_py(),
                           "chapter_offsets": b.column("chapter_offsets")[i].as_py()}


def run_noise(lakehouse: Lakehouse, *, config: NoiseConfig) -> NoiseReport:
    """Generate noisy variants of edited books and commit them to ``texts``.

    Edited texts are streamed from the pinned ``texts`` version to the executor's workers,
    which write the variants as data files; the driver commits them all in one commit that
    records the pinned inputs, the recipe, the executor and the failures.
    """
    t0 = time.perf_counter()
    if not (lakehouse.exists("artifacts") and lakehouse.exists("alignments")):
        raise CorpusError("No mined artifacts yet: run `corpus mine` first (it needs books "
                          "with both an edited and an ocr text).")
    pins = lakehouse.pin("texts", "books", "artifacts", "alignments")
    model = load_noise_model(lakehouse, artifacts_version=pins["artifacts"],
                             alignments_version=pins["alignments"])
    align_rows = lakehouse.read("alignments", version=pins["alignments"]).to_pylist()
    cers = [r["cer"] for r in align_rows
            if r["cer"] is not None and (r.get("raw_variant") or OCR) == OCR]
    uniform_cer = float(np.mean(cers)) if cers else 0.0
    books = lakehouse.read("books", version=pins["books"],
                           columns=["book_id", "title", "author"]).to_pylist()
    metas = {b["book_id"]: BookMeta(b["book_id"], b["title"] or "", b["author"] or "")
             for b in books}
    ids, present = _edited_ids(lakehouse, pins["texts"])
    wanted = select_books(ids, config.books) if config.books else None
    n_books = len(wanted) if wanted else len(ids)
    av = pins["artifacts"]
    names = {config.seed + k: noisy_variant(config.recipe, av, config.seed + k)
             for k in range(config.per_book)}
    report = NoiseReport(variants=sorted(names.values()), texts_version=pins["texts"],
                         model=model.summary(), books=n_books)
    executor = make_executor(config.executor, workers=config.workers,
                             address=config.ray_address)
    job = _Job(model, config, uniform_cer, lakehouse.config, names, pins["texts"],
               datetime.now(UTC))

    def counted(rows: Iterator[dict]) -> Iterator[dict]:
        for r in rows:
            report.chars_in += len(r["text"]) * config.per_book
            yield r

    rows = counted(_edited_rows(lakehouse, pins["texts"], wanted))
    files, keys = [], []
    # at least two batches per worker when the books are few: none idles (a book's variant
    # does not depend on its batch)
    per_batch = max(1, min(config.batch_books,
                           -(-n_books * config.per_book // (2 * executor.workers))))
    for out in executor.map(
            _write_variants, _batches(_tasks(rows, metas, config),
                                      BATCH_CHUNKS * config.chunk_chars,
                                      per_batch),
            setup=_worker_job, setup_args=(job,),
            desc="noise", unit="variant", total=n_books * config.per_book, key=_task_key):
        if isinstance(out, Failed):
            report.failed[out.key] = out.reason
            log.warning("noise: no variant for %s: %s", out.key, out.reason)
            continue
        if out["file"] is not None:
            files.append(out["file"])
        keys.append((out["book_id"], out["variant"]))
        report.chars_out += out["chars_out"]
    report.executor = executor.summary()
    lineage = Lineage(
        operation="noise", inputs=pins,
        config={"recipe": config.recipe, "seed": config.seed, "per_book": config.per_book,
                "cer_scale": config.cer_scale, "chunk_chars": config.chunk_chars,
                "books": list(config.books), "model": model.summary(),
                "executor": executor.describe(), "failed": len(report.failed),
                "failures": dict(sorted(report.failed.items())[:FAILURES_KEPT])})
    # one commit for the whole run; a rerun's rows replace the earlier ones in it (only when
    # the variants exist already: otherwise there is nothing to look for)
    version = lakehouse.commit_files("texts", files, lineage=lineage,
                                     replace=keys if present & set(names.values()) else ())
    report.rows = len(keys)
    report.texts_written = version
    report.seconds = time.perf_counter() - t0
    return report
