"""The schema of every catalog table, declared once.

Each table has a :class:`TableSpec`: its Arrow schema (non-nullable fields are enforced by
Delta on write), its key columns (what MERGE matches on) and a one-line description that
``corpus tables`` shows. Stages refer to tables by name only; adding a column happens here.
"""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class TableSpec:
    """A catalog table: name, schema, key columns for MERGE, description."""

    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        missing = [k for k in self.keys if k not in self.schema.names]
        if missing:
            raise ValueError(f"table {self.name}: key columns {missing} are not in its schema")


def _declare() -> list[TableSpec]:
    """Every table's spec (imports pyarrow: called once, on first use of a schema)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")

    def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
        return pa.field(name, typ, nullable=nullable)

    return [
        TableSpec(
            "files",
            pa.schema([
                _f("path", pa.string(), False),
                _f("size", pa.int64(), False),
                _f("mtime", ts),
                _f("sha256", pa.string(), False),
                _f("kind", pa.string(), False),  # edited|scan|scores|metadata|junk
                _f("format", pa.string()),
                _f("encoding", pa.string()),
                _f("book_id", pa.string()),
                _f("status", pa.string(), False),  # ok|duplicate|superseded|quarantined|removed
                _f("reason", pa.string()),
                _f("blob_uri", pa.string()),
                _f("ingested_at", ts, False),
            ]),
            ("path",),
            "every file the share held, with its status and the reason when not used",
        ),
        TableSpec(
            "books",
            pa.schema([
                _f("book_id", pa.string(), False),  # ISBN-13 or an imported passage id
                _f("title", pa.string()),
                _f("author", pa.string()),
                _f("n_chapters", pa.int32()),
                _f("n_chars", pa.int64()),
                _f("n_words", pa.int64()),
                _f("text_sha256", pa.string()),
                _f("sources", pa.list_(pa.string())),
                _f("updated_at", ts),
            ]),
            ("book_id",),
            "one row per book: identity and size of its current edited text",
        ),
        TableSpec(
            "texts",
            pa.schema([
                _f("book_id", pa.string(), False),
                # edited|ocr|corrected|noisy/<recipe>-v<N>/<seed> (catalog/rules.py)
                _f("variant", pa.string(), False),
                _f("text", pa.large_string(), False),
                _f("n_chars", pa.int64()),
                _f("chapter_offsets", pa.list_(pa.int64())),
                _f("page_offsets", pa.list_(pa.int64())),
                _f("derived_from", pa.string()),
                _f("created_at", ts),
            ]),
            ("book_id", "variant"),
            "full text of every book variant (edited, ocr, corrected, noisy/...)",
        ),
        TableSpec(
            "scores",
            pa.schema([
                _f("book_id", pa.string(), False),
                _f("metric", pa.string(), False),  # bt_easiness | lexile | grade ...
                _f("value", pa.float64()),
                _f("scored_at", ts, False),
                _f("source_file", pa.string(), False),
                _f("source_row", pa.int64(), False),
            ]),
            ("book_id", "metric", "scored_at", "source_file", "source_row"),
            "score history; the latest per (book, metric) is current",
        ),
        TableSpec(
            "scans",
            pa.schema([
                _f("scan_id", pa.string(), False),
                _f("book_id", pa.string()),
                _f("source", pa.string()),
                _f("n_pages", pa.int32()),  # pages: PDF pages, or frames of its image files
                _f("pages_done", pa.int32()),
                _f("status", pa.string(), False),  # new|ocr_done|flagged|accepted|failed
                _f("reason", pa.string()),
                _f("ocr_engine", pa.string()),
                _f("mean_confidence", pa.float64()),
                _f("updated_at", ts),
                # the scan's content: sha256 of its PDF or image file, or of the names and
                # sha256s of its page images; a rescan over the same path changes it
                _f("sha256", pa.string()),
            ]),
            ("scan_id",),
            "raw scans registered from the share and their OCR state",
        ),
        TableSpec(
            "ocr_pages",
            pa.schema([
                _f("scan_id", pa.string(), False),
                _f("page_no", pa.int32(), False),
                _f("text", pa.large_string()),
                _f("mean_confidence", pa.float64()),
                _f("words", pa.string()),  # JSON: [[word, confidence, x, y, w, h], ...]
                _f("dpi", pa.int32()),
                _f("engine", pa.string()),
                _f("seconds", pa.float64()),
                # the scan content (scans.sha256) this page was read from: pages of an older
                # content stay as history and are never mixed into the current OCR text
                _f("scan_sha256", pa.string()),
            ]),
            ("scan_id", "page_no"),
            "OCR output per scanned page, with word confidences",
        ),
        TableSpec(
            "flags",
            pa.schema([
                _f("flag_id", pa.string(), False),
                _f("scan_id", pa.string(), False),
                _f("book_id", pa.string()),
                _f("flag", pa.string(), False),  # rescan|wrong_book|needs_edit|ok
                _f("note", pa.string()),
                _f("editor", pa.string(), False),
                _f("created_at", ts, False),
                _f("resolved_at", ts),
                _f("resolved_by", pa.string()),  # the editor who resolved it
            ]),
            ("flag_id",),
            "editors' flags on scans",
        ),
        TableSpec(
            "corrections",
            pa.schema([
                _f("correction_id", pa.string(), False),
                _f("scan_id", pa.string(), False),
                # the scan content (scans.sha256) the page was corrected for: after a rescan
                # the corrections of the old content are history, like its ocr_pages
                _f("scan_sha256", pa.string()),
                _f("page_no", pa.int32(), False),
                _f("book_id", pa.string()),
                _f("text", pa.large_string(), False),  # the editor's text of the whole page
                _f("editor", pa.string(), False),
                _f("created_at", ts, False),
                _f("ocr_sha256", pa.string()),  # sha256 of the OCR page text corrected
            ]),
            ("correction_id",),
            "editors' page corrections of OCR text (append-only; the newest per scan_id, "
            "scan_sha256, page_no wins)",
        ),
        TableSpec(
            "promotions",
            pa.schema([
                _f("promotion_id", pa.string(), False),
                _f("scan_id", pa.string(), False),
                _f("scan_sha256", pa.string()),
                _f("book_id", pa.string(), False),
                _f("editor", pa.string(), False),
                _f("created_at", ts, False),
                _f("n_pages", pa.int32()),
                _f("text_sha256", pa.string()),  # of the edited text written
                _f("correction_ids", pa.list_(pa.string())),  # the corrections it is made of
            ]),
            ("promotion_id",),
            "books promoted to edited from fully corrected scans: who, when, from what",
        ),
        TableSpec(
            "alignments",
            pa.schema([
                _f("book_id", pa.string(), False),
                _f("raw_variant", pa.string(), False),
                _f("cer", pa.float64()),
                _f("wer", pa.float64()),
                _f("n_ref_chars", pa.int64()),
                _f("n_ops", pa.int64()),
                _f("n_substitutions", pa.int64()),
                _f("n_insertions", pa.int64()),
                _f("n_deletions", pa.int64()),
                _f("seconds", pa.float64()),
                _f("n_hyp_chars", pa.int64()),
                _f("n_ref_words", pa.int64()),
                _f("word_distance", pa.int64()),
                _f("n_pages", pa.int32()),
                # raw chars of headers, page numbers, front matter
                _f("structure_chars", pa.int64()),
                _f("body_cer", pa.float64()),  # CER with that page structure left out of raw

                _f("texts_version", pa.int64()),
                _f("reference", pa.string()),  # the clean variant aligned against
            ]),
            ("book_id", "raw_variant"),
            "per-book alignment of an edited text against a raw variant",
        ),
        TableSpec(
            "artifacts",
            pa.schema([
                _f("kind", pa.string(), False),
                _f("raw", pa.string(), False),
                _f("edited", pa.string(), False),
                _f("context", pa.string(), False),
                _f("count", pa.int64()),
                _f("opportunities", pa.int64()),
                _f("probability", pa.float64()),
                _f("n_books", pa.int64()),
                _f("value", pa.float64()),  # kind-specific number (see noise/mine.py)
                _f("texts_version", pa.int64()),
                _f("raw_variant", pa.string()),  # what was mined against edited (ocr, noisy/...)
            ]),
            ("kind", "raw", "edited", "context", "raw_variant"),
            "OCR artifact patterns mined from aligned pairs",
        ),
        TableSpec(
            "shards",
            pa.schema([
                _f("dataset", pa.string(), False),
                _f("shard_uri", pa.string(), False),
                _f("split", pa.string(), False),
                _f("n_samples", pa.int64()),
                _f("n_tokens", pa.int64()),
                _f("tokenizer", pa.string()),
                _f("seq_len", pa.int32()),
                _f("window", pa.string()),
                _f("stride", pa.int32()),
                _f("target", pa.string()),
                _f("sha256", pa.string()),
                _f("created_at", ts),
                _f("shard_index", pa.int32()),  # order of the shard within (dataset, split)
                _f("n_books", pa.int64()),
                _f("variants", pa.list_(pa.string())),
                _f("pad_id", pa.int32()),
                _f("size_bytes", pa.int64()),
                _f("texts_version", pa.int64()),
                _f("scores_version", pa.int64()),
                _f("build_id", pa.string()),  # one id per `corpus shards build` run
                _f("first_sample", pa.string()),  # sample ids at the shard's ends (write order)
                _f("last_sample", pa.string()),
                # the shard's books: evaluation finds a dataset's validation books here
                # without reading shard files (null in manifests built before it)
                _f("book_ids", pa.list_(pa.string())),
            ]),
            ("dataset", "shard_uri"),
            "manifest of token shard files; a dataset version is a table version",
        ),
        TableSpec(
            "runs",
            pa.schema([
                _f("run_id", pa.string(), False),
                _f("dataset", pa.string()),
                _f("shards_version", pa.int64()),
                _f("backbone", pa.string()),
                _f("head", pa.string()),
                _f("config", pa.string()),  # JSON, resolved
                _f("metrics", pa.string()),  # JSON
                _f("checkpoint_uri", pa.string()),
                _f("status", pa.string()),
                _f("started_at", ts),
                _f("finished_at", ts),
            ]),
            ("run_id",),
            "training runs with resolved config, metrics and checkpoints",
        ),
        TableSpec(
            "predictions",
            pa.schema([
                _f("run_id", pa.string(), False),
                _f("book_id", pa.string(), False),
                _f("variant", pa.string(), False),
                _f("target", pa.string()),
                _f("prediction", pa.float64()),
                _f("truth", pa.float64()),
                _f("split", pa.string()),
                _f("created_at", ts),
                # windows the text was cut into, and the sample standard deviation of their
                # predictions (null for one window): what catalog/readiness.py judges
                _f("n_windows", pa.int32()),
                _f("window_sd", pa.float64()),
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


def check_name(name: str) -> None:
    """Raise a clear error listing the tables unless ``name`` is a catalog table (no pyarrow)."""
    if name not in TABLE_NAMES:
        raise TableNotFoundError(
            f"There is no catalog table named {name!r}. Known tables: {', '.join(TABLE_NAMES)}."
        )


def spec(name: str) -> TableSpec:
    """Return the declared spec of table ``name`` or raise a clear error listing the tables."""
    check_name(name)
    return _tables()[name]
