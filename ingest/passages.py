"""Import a labelled table of passages (a quiz bank, a readability corpus) as books.

Short texts then train and score through the same path as books: each passage becomes a
``books`` row, an ``edited`` text and its ``scores``. Bad rows (no id, no text, a duplicate
id, a score that is not a number) are reported with their row number and kept out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from catalog import TABLES, ConfigError, Lakehouse, Lineage, put_content_addressed, sha256_file
from catalog.rules import EDITED


@dataclass(frozen=True)
class ImportConfig:
    """Which columns of the input hold what.

    Attributes:
        id_col: Column with a unique passage id (becomes ``book_id``, after ``id_prefix``).
        text_col: Column with the passage text.
        title_col: Optional column with a title.
        author_col: Optional column with an author.
        scores: ``{metric: column}``, e.g. ``{"bt_easiness": "BT_easiness"}``.
        id_prefix: Prepended to every id, to keep imported ids apart from ISBNs.
    """

    id_col: str
    text_col: str
    title_col: str | None = None
    author_col: str | None = None
    scores: Mapping[str, str] = field(default_factory=dict)
    id_prefix: str = ""

    def __post_init__(self) -> None:
        for name in ("id_col", "text_col"):
            if not str(getattr(self, name) or "").strip():
                raise ConfigError(f"import: {name} must name a column, got an empty value.")
        for metric, col in self.scores.items():
            if not metric.strip() or not col.strip():
                raise ConfigError(
                    f"import: score {metric!r}={col!r} must be METRIC=COLUMN with both parts."
                )
        object.__setattr__(self, "scores", MappingProxyType(dict(self.scores)))

    def columns(self) -> list[str]:
        """Every input column this config reads."""
        cols = [self.id_col, self.text_col, self.title_col, self.author_col, *self.scores.values()]
        return [c for c in cols if c]


@dataclass(frozen=True)
class Rejected:
    """A row kept out of the import, with its 1-based data row number and the reason."""

    row: int
    passage_id: str | None
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """The tables an import writes, and what it kept out."""

    books: pa.Table
    texts: pa.Table
    scores: pa.Table
    rejected: list[Rejected]


def _number(value: Any) -> float | None:
    """A score cell as a float; None for empty; raises ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, int | float):
        f = float(value)
    else:
        s = str(value).strip()
        if not s:
            return None
        f = float(s)
    if math.isnan(f) or math.isinf(f):
        raise ValueError(value)
    return f


def passages_to_tables(
    table: pa.Table, *, config: ImportConfig, source: str, scored_at: datetime
) -> ImportResult:
    """Turn a passages table into ``books``, ``texts`` and ``scores`` rows (pure).

    Args:
        table: The input, with at least the columns ``config`` names.
        config: Column mapping.
        source: Recorded as each row's source (the input file).
        scored_at: When the scores were given (e.g. the file's modification time).
    """
    missing = [c for c in config.columns() if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"{source}: no column(s) {missing}. The file has: {table.column_names}."
        )
    now = datetime.now(UTC)
    books, texts, scores, rejected = [], [], [], []
    first_seen: dict[str, int] = {}
    cols = {c: table.column(c).to_pylist() for c in config.columns()}
    for i in range(table.num_rows):
        row_no = i + 1
        raw_id = cols[config.id_col][i]
        pid = str(raw_id).strip() if raw_id is not None else ""
        text = cols[config.text_col][i]
        text = str(text).strip() if text is not None else ""
        if not pid:
            rejected.append(Rejected(row_no, None, f"empty id column {config.id_col!r}"))
            continue
        book_id = f"{config.id_prefix}{pid}"
        if not text:
            rejected.append(Rejected(row_no, pid, f"empty text column {config.text_col!r}"))
            continue
        if book_id in first_seen:
            rejected.append(Rejected(row_no, pid, f"duplicate id, first at row "
                                                  f"{first_seen[book_id]}"))
            continue
        values: dict[str, float | None] = {}
        bad = None
        for metric, col in config.scores.items():
            try:
                values[metric] = _number(cols[col][i])
            except (TypeError, ValueError):
                bad = f"score {metric} in column {col!r} is not a number: {cols[col][i]!r}"
                break
        if bad:
            rejected.append(Rejected(row_no, pid, bad))
            continue
        first_seen[book_id] = row_no
        title = cols[config.title_col][i] if config.title_col else None
        author = cols[config.author_col][i] if config.author_col else None
        books.append({
            "book_id": book_id, "title": title, "author": author, "n_chapters": 1,
            "n_chars": len(text), "n_words": len(text.split()),
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "sources": [source],
            "updated_at": now,
        })
        texts.append({
            "book_id": book_id, "variant": EDITED, "text": text, "n_chars": len(text),
            "chapter_offsets": [0], "derived_from": source, "created_at": now,
        })
        scores.extend(
            {"book_id": book_id, "metric": m, "value": v, "scored_at": scored_at,
             "source_file": source, "source_row": row_no}
            for m, v in values.items() if v is not None
        )
    def as_table(name: str, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=TABLES[name].schema)

    return ImportResult(as_table("books", books), as_table("texts", texts),
                        as_table("scores", scores), rejected)


def read_passages(path: Path) -> pa.Table:
    """Read a CSV or Parquet file of passages (all CSV columns as text)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConfigError(f"{path}: no such file.")
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            with path.open("rb") as f:
                first = f.readline()
            sep = "\t" if suffix == ".tsv" else (";" if first.count(b";") > first.count(b",")
                                                 else ",")
            # Column types are decided by the import, not guessed: every column is text.
            return pl.read_csv(path, separator=sep, infer_schema=False).to_arrow()
    except (pa.ArrowInvalid, pl.exceptions.PolarsError) as e:
        raise ConfigError(f"{path}: cannot be read as {suffix[1:]}: {e}") from None
    raise ConfigError(f"{path}: expected a .csv, .tsv or .parquet file.")


def run_import(lakehouse: Lakehouse, path: str | Path, *, config: ImportConfig) -> ImportResult:
    """Import a passages file into ``books``, ``texts`` and ``scores`` with lineage.

    The file's bytes are stored content-addressed, rows are upserted by key (re-importing the
    same file adds no rows), and the result lists the rejected rows.
    """
    path = Path(path).resolve()
    table = read_passages(path)
    digest, blob = put_content_addressed(lakehouse.store, path, sha256=sha256_file(path))
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    result = passages_to_tables(table, config=config, source=str(path), scored_at=mtime)
    lineage = Lineage(
        operation="import", sources=[f"{path} sha256:{digest} {blob}"],
        config={"id_col": config.id_col, "text_col": config.text_col,
                "title_col": config.title_col, "author_col": config.author_col,
                "scores": dict(config.scores), "id_prefix": config.id_prefix,
                "rows": table.num_rows, "rejected": len(result.rejected)},
    )
    if result.books.num_rows:
        lakehouse.merge("books", result.books, lineage=lineage)
        lakehouse.merge("texts", result.texts, lineage=lineage)
    if result.scores.num_rows:
        lakehouse.merge("scores", result.scores, lineage=lineage)
    return result
