"""Data rules more than one stage relies on, each defined once.

* **Variants** of a book's text in ``texts``: :data:`EDITED` (the publisher's edited text),
  :data:`OCR` (the OCR of its scan), :data:`CORRECTED` (the OCR as editors corrected it, page
  by page) and the noisy family ``noisy/<recipe>-v<artifacts version>/<seed>`` made by the
  noise stage (:func:`noisy_variant`, :func:`parse_noisy`, :func:`variant_family`).
* **Page separator**: OCR joins a scan's pages with :data:`PAGE_SEPARATOR`; whoever splits an
  OCR text back into pages (mining, noise generation) splits on it.
* **Window length**: :data:`DEFAULT_SEQ_LEN` tokens, when neither the user nor a run says.
* **Current scores**: the latest ``scored_at`` per (book, metric) wins, ties broken by the
  greater ``source_file`` and then the greater ``source_row`` (:func:`current_scores_sql`,
  which the Python helpers run too, and which SQL users get as the view ``current_scores``).
* **Current texts**: per book, the best text it has: edited, else corrected, else OCR
  (:func:`current_texts_sql`, the view ``current_texts``).
* **Metric names**: a reading-level metric's readable name and which way is easier
  (:data:`METRICS`, :func:`metric_name`, :func:`metric_direction`, :func:`metric_label`):
  the review page, report plots, model cards and dataset cards say it the same way.
* **CLEAR ids**: CLEAR passages are imported as books ``clear-<ID>``
  (:data:`CLEAR_ID_PREFIX`); their text is CC BY-NC-SA 4.0, which whatever is made from
  them (exported shards) must say.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.errors import SchemaError

if TYPE_CHECKING:
    import pyarrow as pa

EDITED = "edited"
OCR = "ocr"
CORRECTED = "corrected"
NOISY = "noisy"
# the order in which a book's texts stand in for its edited text
TEXT_PRECEDENCE = (EDITED, CORRECTED, OCR)

PAGE_SEPARATOR = "\n\n"
DEFAULT_SEQ_LEN = 512

CLEAR_ID_PREFIX = "clear-"
CLEAR_LICENSE = "CC BY-NC-SA 4.0"


@dataclass(frozen=True)
class NoisyVariant:
    """The parts of a ``noisy/<recipe>-v<artifacts version>/<seed>`` variant name."""

    recipe: str
    artifacts_version: int
    seed: int

    def __str__(self) -> str:
        return noisy_variant(self.recipe, self.artifacts_version, self.seed)


def noisy_variant(recipe: str, artifacts_version: int, seed: int) -> str:
    """The variant name of noisy text made by ``recipe`` from ``artifacts`` at
    ``artifacts_version`` with ``seed``: ``noisy/<recipe>-v<N>/<seed>``."""
    return f"{NOISY}/{recipe}-v{artifacts_version}/{seed}"


def parse_noisy(variant: str) -> NoisyVariant | None:
    """The parts of a noisy variant name, or None when ``variant`` is not one."""
    parts = variant.split("/")
    if len(parts) != 3 or parts[0] != NOISY:
        return None
    recipe, sep, version = parts[1].rpartition("-v")
    if not (sep and recipe and version.isdigit() and parts[2].isdigit()):
        return None
    return NoisyVariant(recipe, int(version), int(parts[2]))


def is_noisy(variant: str) -> bool:
    """Whether ``variant`` is of the noisy family (``noisy/...``)."""
    return variant.startswith(NOISY + "/")


def variant_family(variant: str) -> str:
    """What a variant is reported under: ``noisy/<recipe>-v<N>`` for the noisy family (its
    seeds together), the variant itself otherwise."""
    parts = variant.split("/")
    return "/".join(parts[:2]) if parts[0] == NOISY else variant


def match_variants(available: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The available variants matching any pattern (exact names or shell patterns such as
    ``noisy/*``), sorted."""
    return [v for v in sorted(set(available))
            if any(fnmatch.fnmatchcase(v, p) for p in patterns)]


# ---- reading-level metrics ---------------------------------------------------------------
# metric -> (readable name, which way is easier); other metrics are shown by their name
METRICS: dict[str, tuple[str, str]] = {
    "bt_easiness": ("BT easiness", "higher = easier"),
    "lexile": ("Lexile", "higher = harder"),
    "grade": ("grade level", "higher = harder"),
}


def metric_name(metric: str | None) -> str:
    """A metric's readable name (``BT easiness``); ``reading level`` when none is known."""
    if not metric:
        return "reading level"
    return METRICS[metric][0] if metric in METRICS else metric.replace("_", " ")


def metric_direction(metric: str | None) -> str | None:
    """Which way is easier for a metric (``higher = easier``), None when unknown."""
    return METRICS[metric][1] if metric in METRICS else None


def metric_label(metric: str | None) -> str:
    """The metric's name with which way is easier when known: ``BT easiness, higher =
    easier``."""
    direction = metric_direction(metric)
    return f"{metric_name(metric)}, {direction}" if direction else metric_name(metric)


def parse_text_ref(ref: str) -> tuple[str, str]:
    """``BOOK_ID`` or ``BOOK_ID:VARIANT`` (a variant may itself hold ``/``); the variant
    defaults to :data:`EDITED`."""
    book, sep, variant = ref.partition(":")
    return book, (variant if sep and variant else EDITED)


# ---- current scores and texts -------------------------------------------------------------
def current_scores_sql(scores: str = "scores") -> str:
    """A SELECT over the ``scores`` table (or any relation ``scores`` names) giving one row
    per (book_id, metric), its columns unchanged: the current score by the rule above."""
    return f"""
SELECT * EXCLUDE (_rn) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY book_id, metric
        ORDER BY scored_at DESC NULLS LAST, source_file DESC NULLS LAST,
                 source_row DESC NULLS LAST) AS _rn
    FROM {scores}
) WHERE _rn = 1
"""


def current_texts_sql(texts: str = "texts") -> str:
    """A SELECT over the ``texts`` table giving one row per book, its columns unchanged: the
    book's edited text, else its corrected text, else its OCR text."""
    rank = " ".join(f"WHEN '{v}' THEN {i}" for i, v in enumerate(TEXT_PRECEDENCE))
    allowed = ", ".join(f"'{v}'" for v in TEXT_PRECEDENCE)
    return f"""
SELECT * EXCLUDE (_rn) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY book_id ORDER BY CASE variant {rank} END) AS _rn
    FROM {texts} WHERE variant IN ({allowed})
) WHERE _rn = 1
"""


def current_scores(scores: pa.Table) -> pa.Table:
    """The current score per (book_id, metric) of rows in the ``scores`` schema, sorted by
    (book_id, metric), in that schema (a null value stays: the latest score may be empty).

    Raises:
        SchemaError: A column of the ``scores`` schema is missing.
    """
    import duckdb

    from catalog.schemas import spec

    schema = spec("scores").schema
    missing = [n for n in schema.names if n not in scores.column_names]
    if missing:
        raise SchemaError(
            f"current_scores needs the scores table columns {schema.names}; "
            f"missing {missing}, found {scores.column_names}."
        )
    table = scores.select(schema.names).cast(schema)
    if table.num_rows == 0:
        return table
    con = duckdb.connect()
    try:
        con.register("_scores", table)
        out = con.sql(current_scores_sql("_scores") + " ORDER BY book_id, metric").to_arrow_table()
    finally:
        con.close()
    return out.cast(schema)


def current_values(scores: pa.Table, metric: str) -> dict[str, float]:
    """The current value of ``metric`` per book; a book whose current score is empty has
    none."""
    import pyarrow.compute as pc

    latest = current_scores(scores)
    latest = latest.filter(pc.equal(latest.column("metric"), metric))
    return {b: float(v) for b, v in zip(latest.column("book_id").to_pylist(),
                                        latest.column("value").to_pylist(), strict=True)
            if v is not None}
