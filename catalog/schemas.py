"""The schema of every catalog table, declared once.

Each table has a :class:`TableSpec`: its Arrow schema (non-nullable fields are enforced by
Delta on write), its key columns (what MERGE matches on) and a one-line description that
``corpus tables`` shows. Every column carries a one-line description too, declared beside its
type: ``corpus describe`` prints them, `corpus sql` shows them as DuckDB column comments, and
they are written into each table's Delta schema as field metadata (key ``comment``, which
Spark and Databricks read as the column comment). Stages refer to tables by name only; adding
a column happens here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.errors import TableNotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

# The catalog's table names, in the order of their specs in _declare() (checked when the
# specs are built). Kept apart from the Arrow schemas so that knowing which tables exist
# does not import pyarrow (~60 ms): `corpus sql` on a local root never needs it.
TABLE_NAMES: tuple[str, ...] = (
    "files", "books", "texts", "scores", "scans", "ocr_pages", "flags", "corrections",
    "promotions", "alignments", "artifacts", "shards", "runs", "predictions",
)

# The field metadata key of a column's description: the key Spark, Databricks and other
# Delta readers show as the column's comment.
COMMENT = "comment"


@dataclass(frozen=True)
class Column:
    """One column of a catalog table, as ``corpus describe`` prints it."""

    name: str
    type: str
    nullable: bool
    key: bool
    description: str


@dataclass(frozen=True)
class TableSpec:
    """A catalog table: name, schema (each field with its description), key columns for
    MERGE, description."""

    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        missing = [k for k in self.keys if k not in self.schema.names]
        if missing:
            raise ValueError(f"table {self.name}: key columns {missing} are not in its schema")
        bare = [f.name for f in self.schema if not column_doc(f)]
        if bare:
            raise ValueError(f"table {self.name}: columns {bare} have no description; give "
                             "each column one line saying what it holds")
        if not self.description.strip():
            raise ValueError(f"table {self.name}: no description")

    def doc(self, column: str) -> str:
        """The one-line description of ``column``."""
        return column_doc(self.schema.field(column))

    @property
    def columns(self) -> list[Column]:
        """Every column with its type, nullability, key membership and description."""
        return [Column(f.name, str(f.type), f.nullable, f.name in self.keys, column_doc(f))
                for f in self.schema]

    @functools.cached_property
    def data_schema(self) -> pa.Schema:
        """The schema without the descriptions: what data is written with. A description
        lives once in the Delta log, not again in the footer of every Parquet file."""
        import pyarrow as pa

        return pa.schema([f.remove_metadata() for f in self.schema])


def column_doc(field: pa.Field) -> str:
    """The description a field carries in its metadata ('' when none)."""
    meta = field.metadata or {}
    return meta.get(COMMENT.encode(), b"").decode()


def _declare() -> list[TableSpec]:
    """Every table's spec (imports pyarrow: called once, on first use of a schema)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")

    def _f(name: str, typ: pa.DataType, doc: str, *, nullable: bool = True) -> pa.Field:
        return pa.field(name, typ, nullable=nullable, metadata={COMMENT: doc})

    return [
        TableSpec(
            "files",
            pa.schema([
                _f("path", pa.string(), "path of the file inside the share", nullable=False),
                _f("size", pa.int64(), "size of the file in bytes", nullable=False),
                _f("mtime", ts, "when the file was last modified, as the share reported it"),
                _f("sha256", pa.string(), "SHA-256 of the file's bytes", nullable=False),
                _f("kind", pa.string(), "what the file is: edited, scan, scores, metadata or "
                   "junk", nullable=False),
                _f("format", pa.string(), "file format read from its name and bytes (docx, "
                   "txt, pdf, tiff, jpg, csv, ...)"),
                _f("encoding", pa.string(), "text encoding a text file was decoded with"),
                _f("book_id", pa.string(), "the book the file belongs to (ISBN-13), when "
                   "known"),
                _f("status", pa.string(), "ok, duplicate, superseded, quarantined or "
                   "removed", nullable=False),
                _f("reason", pa.string(), "why the file is not used as it is (null when "
                   "status is ok)"),
                _f("blob_uri", pa.string(), "where the lakehouse keeps a copy of the file's bytes "
                   "(by content; null when it could not be read)"),
                _f("ingested_at", ts, "when the ingest run that wrote this row started",
                   nullable=False),
            ]),
            ("path",),
            "every file the share held, with its status and the reason when not used",
        ),
        TableSpec(
            "books",
            pa.schema([
                _f("book_id", pa.string(), "ISBN-13 of the book, or an imported passage id",
                   nullable=False),
                _f("title", pa.string(), "title, from the file or the metadata sheet"),
                _f("author", pa.string(), "author, from the file or the metadata sheet"),
                _f("n_chapters", pa.int32(), "chapters found in the edited text"),
                _f("n_chars", pa.int64(), "characters in the edited text"),
                _f("n_words", pa.int64(), "whitespace-separated words in the edited text"),
                _f("text_sha256", pa.string(), "SHA-256 of the edited text (UTF-8)"),
                _f("sources", pa.list_(pa.string()), "share files (or the import file) the "
                   "edited text was assembled from, in order"),
                _f("updated_at", ts, "when this row was last written"),
            ]),
            ("book_id",),
            "one row per book: identity and size of its current edited text",
        ),
        TableSpec(
            "texts",
            pa.schema([
                _f("book_id", pa.string(), "the book (books.book_id)", nullable=False),
                _f("variant", pa.string(), "which text: edited, ocr, corrected or "
                   "noisy/<recipe>-v<N>/<seed> (catalog/rules.py)", nullable=False),
                _f("text", pa.large_string(), "the full text of the book in this variant",
                   nullable=False),
                _f("n_chars", pa.int64(), "characters in text"),
                _f("chapter_offsets", pa.list_(pa.int64()), "character offsets where "
                   "chapters start"),
                _f("page_offsets", pa.list_(pa.int64()), "character offsets where scanned "
                   "pages start (OCR-derived variants)"),
                _f("derived_from", pa.string(), "what the text was made from: a share file, "
                   "a scan and its corrections, or texts@version:book/variant"),
                _f("created_at", ts, "when this variant was written"),
            ]),
            ("book_id", "variant"),
            "full text of every book variant (edited, ocr, corrected, noisy/...)",
        ),
        TableSpec(
            "scores",
            pa.schema([
                _f("book_id", pa.string(), "the book scored (books.book_id)",
                   nullable=False),
                _f("metric", pa.string(), "what was measured: bt_easiness, lexile, grade, "
                   "...", nullable=False),
                _f("value", pa.float64(), "the score (null when the sheet's cell was empty)"),
                _f("scored_at", ts, "when the score was given: the row's date in the sheet, "
                   "else the file's modification time", nullable=False),
                _f("source_file", pa.string(), "the scores sheet (or command) the row came "
                   "from", nullable=False),
                _f("source_row", pa.int64(), "row number in source_file", nullable=False),
            ]),
            ("book_id", "metric", "scored_at", "source_file", "source_row"),
            "score history; the latest per (book, metric) is current",
        ),
        TableSpec(
            "scans",
            pa.schema([
                _f("scan_id", pa.string(), "id of the scan, derived from its path in the share",
                   nullable=False),
                _f("book_id", pa.string(), "the book scanned, when known"),
                _f("source", pa.string(), "the scan's PDF or image file, or its folder of "
                   "page images, in the share"),
                _f("n_pages", pa.int32(), "pages: PDF pages, or frames of its image files"),
                _f("pages_done", pa.int32(), "pages OCR has read so far"),
                _f("status", pa.string(), "new, ocr_done, flagged, accepted or failed",
                   nullable=False),
                _f("reason", pa.string(), "why OCR failed or the scan was flagged"),
                _f("ocr_engine", pa.string(), "the OCR engine and version that read it"),
                _f("mean_confidence", pa.float64(), "mean OCR word confidence over its pages "
                   "(0-100)"),
                _f("updated_at", ts, "when this row was last written"),
                # a rescan over the same path changes it: the pages and corrections of the
                # old content then stay as history (ocr_pages/corrections.scan_sha256)
                _f("sha256", pa.string(), "the scan's content: SHA-256 of its PDF or image "
                   "file, or of the names and SHA-256s of its page images"),
            ]),
            ("scan_id",),
            "raw scans registered from the share and their OCR state",
        ),
        TableSpec(
            "ocr_pages",
            pa.schema([
                _f("scan_id", pa.string(), "the scan (scans.scan_id)", nullable=False),
                _f("page_no", pa.int32(), "page number in the scan, from 1", nullable=False),
                _f("text", pa.large_string(), "the page's OCR text"),
                _f("mean_confidence", pa.float64(), "mean OCR word confidence on the page "
                   "(0-100)"),
                _f("words", pa.string(), "JSON: [[word, confidence, x, y, w, h], ...]"),
                _f("dpi", pa.int32(), "resolution the page image was read at"),
                _f("engine", pa.string(), "the OCR engine and version, or text-layer for a PDF "
                   "page that has its text"),
                _f("seconds", pa.float64(), "time spent reading the page"),
                # pages of an older content stay as history and are never mixed into the
                # current OCR text
                _f("scan_sha256", pa.string(), "the scan content (scans.sha256) this page "
                   "was read from"),
            ]),
            ("scan_id", "page_no"),
            "OCR output per scanned page, with word confidences",
        ),
        TableSpec(
            "flags",
            pa.schema([
                _f("flag_id", pa.string(), "id of the flag", nullable=False),
                _f("scan_id", pa.string(), "the scan flagged (scans.scan_id)",
                   nullable=False),
                _f("book_id", pa.string(), "the book the scan is of, when known"),
                _f("flag", pa.string(), "rescan, wrong_book, needs_edit or ok",
                   nullable=False),
                _f("note", pa.string(), "the editor's note"),
                _f("editor", pa.string(), "who flagged it", nullable=False),
                _f("created_at", ts, "when it was flagged", nullable=False),
                _f("resolved_at", ts, "when it was resolved (null while open)"),
                _f("resolved_by", pa.string(), "the editor who resolved it"),
            ]),
            ("flag_id",),
            "editors' flags on scans",
        ),
        TableSpec(
            "corrections",
            pa.schema([
                _f("correction_id", pa.string(), "id of the correction", nullable=False),
                _f("scan_id", pa.string(), "the scan corrected (scans.scan_id)",
                   nullable=False),
                # after a rescan the corrections of the old content are history, like its
                # ocr_pages
                _f("scan_sha256", pa.string(), "the scan content (scans.sha256) the page was "
                   "corrected for"),
                _f("page_no", pa.int32(), "page number in the scan, from 1", nullable=False),
                _f("book_id", pa.string(), "the book the scan is of, when known"),
                _f("text", pa.large_string(), "the editor's text of the whole page",
                   nullable=False),
                _f("editor", pa.string(), "who corrected it", nullable=False),
                _f("created_at", ts, "when the correction was saved", nullable=False),
                _f("ocr_sha256", pa.string(), "SHA-256 of the OCR page text corrected"),
            ]),
            ("correction_id",),
            "editors' page corrections of OCR text (append-only; the newest per scan_id, "
            "scan_sha256, page_no wins)",
        ),
        TableSpec(
            "promotions",
            pa.schema([
                _f("promotion_id", pa.string(), "id of the promotion", nullable=False),
                _f("scan_id", pa.string(), "the scan promoted (scans.scan_id)",
                   nullable=False),
                _f("scan_sha256", pa.string(), "the scan content (scans.sha256) promoted"),
                _f("book_id", pa.string(), "the book that got the edited text",
                   nullable=False),
                _f("editor", pa.string(), "who promoted it", nullable=False),
                _f("created_at", ts, "when it was promoted", nullable=False),
                _f("n_pages", pa.int32(), "pages in the promoted text"),
                _f("text_sha256", pa.string(), "SHA-256 of the edited text written"),
                _f("correction_ids", pa.list_(pa.string()), "the corrections the text is "
                   "made of (corrections.correction_id)"),
            ]),
            ("promotion_id",),
            "books promoted to edited from fully corrected scans: who, when, from what",
        ),
        TableSpec(
            "alignments",
            pa.schema([
                _f("book_id", pa.string(), "the book aligned", nullable=False),
                _f("raw_variant", pa.string(), "the raw variant aligned (ocr, noisy/...)",
                   nullable=False),
                _f("cer", pa.float64(), "character error rate of raw against reference"),
                _f("wer", pa.float64(), "word error rate of raw against reference"),
                _f("n_ref_chars", pa.int64(), "characters in the reference text"),
                _f("n_ops", pa.int64(), "character edits (substitutions + insertions + "
                   "deletions)"),
                _f("n_substitutions", pa.int64(), "characters substituted"),
                _f("n_insertions", pa.int64(), "characters only in the raw text"),
                _f("n_deletions", pa.int64(), "reference characters missing from raw"),
                _f("seconds", pa.float64(), "time the alignment took"),
                _f("n_hyp_chars", pa.int64(), "characters in the raw text"),
                _f("n_ref_words", pa.int64(), "words in the reference text"),
                _f("word_distance", pa.int64(), "word-level edit distance"),
                _f("n_pages", pa.int32(), "pages in the raw text"),
                _f("structure_chars", pa.int64(), "raw characters of headers, page numbers "
                   "and front matter"),
                _f("body_cer", pa.float64(), "CER with that page structure left out of raw"),
                _f("texts_version", pa.int64(), "version of texts the pair was read from"),
                _f("reference", pa.string(), "the clean variant aligned against (edited or "
                   "corrected)"),
            ]),
            ("book_id", "raw_variant"),
            "per-book alignment of an edited text against a raw variant",
        ),
        TableSpec(
            "artifacts",
            pa.schema([
                _f("kind", pa.string(), "kind of pattern: char_confusion, hyphenation, "
                   "running_header, page_number, ... (noise/mine.py)", nullable=False),
                _f("raw", pa.string(), "the raw (OCR) form", nullable=False),
                _f("edited", pa.string(), "the edited form it stands for ('' for something "
                   "only in raw)", nullable=False),
                _f("context", pa.string(), "where it occurs (neighbouring characters, top or "
                   "bottom of the page; '' for any)", nullable=False),
                _f("count", pa.int64(), "how often it was seen"),
                _f("opportunities", pa.int64(), "how often it could have happened (per kind)"),
                _f("probability", pa.float64(), "count / opportunities"),
                _f("n_books", pa.int64(), "books it was seen in"),
                _f("value", pa.float64(), "a kind-specific number (see noise/mine.py)"),
                _f("texts_version", pa.int64(), "version of texts mined"),
                _f("raw_variant", pa.string(), "what was mined against edited (ocr, "
                   "noisy/...)"),
            ]),
            ("kind", "raw", "edited", "context", "raw_variant"),
            "OCR artifact patterns mined from aligned pairs",
        ),
        TableSpec(
            "shards",
            pa.schema([
                _f("dataset", pa.string(), "name of the token dataset", nullable=False),
                _f("shard_uri", pa.string(), "where the shard file is", nullable=False),
                _f("split", pa.string(), "train or validation", nullable=False),
                _f("n_samples", pa.int64(), "samples (windows) in the shard"),
                _f("n_tokens", pa.int64(), "tokens in the shard"),
                _f("tokenizer", pa.string(), "the tokenizer (alias or folder) used"),
                _f("seq_len", pa.int32(), "tokens per sample at most"),
                _f("window", pa.string(), "how texts were cut: first, chunks or overlap"),
                _f("stride", pa.int32(), "tokens between window starts (overlap only)"),
                _f("target", pa.string(), "the score metric the samples are labelled with"),
                _f("sha256", pa.string(), "SHA-256 of the shard file"),
                _f("created_at", ts, "when the shard was written"),
                _f("shard_index", pa.int32(), "order of the shard within (dataset, split)"),
                _f("n_books", pa.int64(), "books with samples in the shard"),
                _f("variants", pa.list_(pa.string()), "text variants the samples were cut "
                   "from"),
                _f("pad_id", pa.int32(), "the tokenizer's padding token id"),
                _f("size_bytes", pa.int64(), "size of the shard file in bytes"),
                _f("texts_version", pa.int64(), "version of texts read"),
                _f("scores_version", pa.int64(), "version of scores read"),
                _f("build_id", pa.string(), "one id per `corpus shards build` run"),
                _f("first_sample", pa.string(), "id of the shard's first sample (write "
                   "order)"),
                _f("last_sample", pa.string(), "id of the shard's last sample (write order)"),
                # evaluation finds a dataset's validation books here without reading shard
                # files
                _f("book_ids", pa.list_(pa.string()), "the shard's books (null in manifests "
                   "built before it)"),
            ]),
            ("dataset", "shard_uri"),
            "manifest of token shard files; a dataset version is a table version",
        ),
        TableSpec(
            "runs",
            pa.schema([
                _f("run_id", pa.string(), "id of the training run", nullable=False),
                _f("dataset", pa.string(), "the token dataset trained on (shards.dataset)"),
                _f("shards_version", pa.int64(), "version of shards read"),
                _f("backbone", pa.string(), "the pretrained model fine-tuned"),
                _f("head", pa.string(), "the regression head: attention or dense"),
                _f("config", pa.string(), "JSON: the resolved training configuration"),
                _f("metrics", pa.string(), "JSON: training and validation metrics"),
                _f("checkpoint_uri", pa.string(), "where the trained weights are"),
                _f("status", pa.string(), "running, finished or failed"),
                _f("started_at", ts, "when the run started"),
                _f("finished_at", ts, "when the run ended"),
            ]),
            ("run_id",),
            "training runs with resolved config, metrics and checkpoints",
        ),
        TableSpec(
            "predictions",
            pa.schema([
                _f("run_id", pa.string(), "the run that predicted (runs.run_id), or "
                   "ensemble-<hash> for the mean of several runs", nullable=False),
                _f("book_id", pa.string(), "the book predicted", nullable=False),
                _f("variant", pa.string(), "the text variant the prediction was made on",
                   nullable=False),
                _f("target", pa.string(), "the score metric predicted"),
                _f("prediction", pa.float64(), "the predicted score (mean over windows)"),
                _f("truth", pa.float64(), "the book's score of that metric (null when "
                   "unknown)"),
                _f("split", pa.string(), "validation (a held-out book, from `corpus eval`) or "
                   "scored (`corpus score --save`)"),
                _f("created_at", ts, "when the prediction was written"),
                # what catalog/readiness.py judges
                _f("n_windows", pa.int32(), "windows the text was cut into (null for an "
                   "ensemble)"),
                _f("window_sd", pa.float64(), "sample standard deviation of the windows' "
                   "predictions (null for one window)"),
            ]),
            ("run_id", "book_id", "variant", "target"),
            "per-book predictions of a run, with the variant they were made on",
        ),
    ]


@functools.cache
def _tables() -> dict[str, TableSpec]:
    tables = {s.name: s for s in _declare()}
    if tuple(tables) != TABLE_NAMES:
        raise RuntimeError(f"catalog/schemas.py: TABLE_NAMES {TABLE_NAMES} do not match the "
                           f"declared specs {tuple(tables)}; list every table there, in order.")
    return tables


def __getattr__(name: str):
    # TABLES (name -> TableSpec) is built on first use, so importing this module stays cheap.
    if name == "TABLES":
        return _tables()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def closest(name: str, names: Iterable[str] = TABLE_NAMES) -> list[str]:
    """The names most like a misspelt ``name``, best first (empty when none is close)."""
    import difflib

    return difflib.get_close_matches(name.lower(), list(names), n=3, cutoff=0.6)


def check_name(name: str) -> None:
    """Raise a clear error listing the tables unless ``name`` is a catalog table (no pyarrow)."""
    if name not in TABLE_NAMES:
        near = closest(name)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise TableNotFoundError(
            f"There is no catalog table named {name!r}.{hint} Known tables: "
            f"{', '.join(TABLE_NAMES)}."
        )


def spec(name: str) -> TableSpec:
    """Return the declared spec of table ``name`` or raise a clear error listing the tables."""
    check_name(name)
    return _tables()[name]
