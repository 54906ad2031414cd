"""The editors' queue of scans as one SQL query: filters, sorting and pagination in DuckDB.

The catalog tables the queue needs (``scans``, ``books``, ``ocr_pages``, ``flags``, ``runs``,
``predictions``) are registered in an in-memory DuckDB as Arrow datasets (nothing is copied;
filters and projections are pushed into the scans), and one query filters, sorts and cuts a
page with ``LIMIT``/``OFFSET``. Whatever the editor typed reaches the query only as a bound
parameter; sort columns come from a fixed list. A table that does not exist yet (no flags,
no trained run) reads as empty.

Each row carries the scan's title and author (from ``books``, else the first non-empty lines
of its first OCR page, marked as from the title page), its open flags and the predicted
reading level of its raw OCR text by the newest finished training run, with the prediction
on the edited text and the difference where the run scored that too. A scan whose raw OCR
prediction is stable across its windows is marked ready, "can be scored without editing"
(the rule and its justification: :mod:`catalog.readiness`), and the queue can show only those.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

import duckdb

from catalog import TABLES, ConfigError, Lakehouse, TableNotFoundError
from catalog.readiness import NEWEST_RUN_SQL, READY_SE, readiness_sql
from catalog.rules import EDITED, OCR, metric_label  # metric_label: review.py's too
from ingest.flags import FLAGS

STATUSES = ("new", "ocr_done", "failed", "flagged", "accepted")
FLAG_FILTERS = ("any", "none", *FLAGS)  # any / no open flag, or an open flag of this kind
# sort key -> SQL over the query's columns (a fixed list: user input never becomes SQL)
SORTS = {
    "source": "source", "scan": "scan_id", "title": "lower(title)", "author": "lower(author)",
    "book": "book_id", "status": "status", "pages": "n_pages", "confidence": "mean_confidence",
    "flags": "open_flags", "level": "pred_ocr",
}
DEFAULT_SORT = "source"  # registration order of the share: a scan keeps its place when flagged
# The queue's order, defined once: the default sort, the scan id breaking ties. The review
# page (as the last sort keys), its previous/next scan, the ready list and `corpus scans`.
QUEUE_ORDER = f"{SORTS[DEFAULT_SORT]} ASC NULLS LAST, scan_id ASC"
PER_PAGE = 50
MAX_PER_PAGE = 500
_TABLES = ("scans", "books", "ocr_pages", "flags", "runs", "predictions")


@dataclass(frozen=True)
class QueueQuery:
    """What the editor asked the queue for (the page's URL parameters).

    Attributes:
        status: Only scans with this status (one of :data:`STATUSES`).
        flag: ``any`` (has an open flag), ``none`` (no open flag) or a flag kind (an open
            flag of that kind).
        min_conf: Lowest mean OCR confidence (0..100); scans without OCR are left out.
        max_conf: Highest mean OCR confidence (0..100).
        q: Text searched in title, author, ISBN (hyphens ignored), scan id and source.
        sort: A key of :data:`SORTS`.
        dir: ``asc`` or ``desc``.
        page: 1-based page number.
        per_page: Scans per page.
        ready: Only scans that can be scored without editing (:mod:`catalog.readiness`).
    """

    status: str | None = None
    flag: str | None = None
    min_conf: float | None = None
    max_conf: float | None = None
    q: str | None = None
    sort: str = DEFAULT_SORT
    dir: str = "asc"
    page: int = 1
    per_page: int = PER_PAGE
    ready: bool = False

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ConfigError(f"status: expected one of {', '.join(STATUSES)}; "
                              f"got {self.status!r}.")
        if self.flag is not None and self.flag not in FLAG_FILTERS:
            raise ConfigError(f"flag: expected one of {', '.join(FLAG_FILTERS)}; "
                              f"got {self.flag!r}.")
        for name in ("min_conf", "max_conf"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 <= v <= 100):
                raise ConfigError(f"{name}: expected a confidence from 0 to 100; got {v!r}.")
        if (self.min_conf is not None and self.max_conf is not None
                and self.min_conf > self.max_conf):
            raise ConfigError(f"min_conf ({self.min_conf:g}) is above max_conf "
                              f"({self.max_conf:g}): swap them.")
        if self.q is not None and len(self.q) > 200:
            raise ConfigError(f"q: search text is limited to 200 characters; got {len(self.q)}.")
        if self.sort not in SORTS:
            raise ConfigError(f"sort: expected one of {', '.join(SORTS)}; got {self.sort!r}.")
        if self.dir not in ("asc", "desc"):
            raise ConfigError(f"dir: expected asc or desc; got {self.dir!r}.")
        if not 1 <= self.page <= 1_000_000:
            raise ConfigError(f"page: expected a page number from 1; got {self.page!r}.")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ConfigError(f"per_page: expected 1 to {MAX_PER_PAGE}; got {self.per_page!r}.")
        if not isinstance(self.ready, bool):
            raise ConfigError(f"ready: expected True or False; got {self.ready!r}.")

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> QueueQuery:
        """Build from parsed URL parameters (``urllib.parse.parse_qs(..., keep_blank_values=
        True)``); an empty value means "not set". Raises ConfigError on a bad value."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}: use "
                              f"{', '.join(sorted(known))}.")
        values: dict[str, Any] = {}
        for name, vals in params.items():
            if len(vals) > 1:
                raise ConfigError(f"{name}: give it once; got {len(vals)} values.")
            v = vals[0].strip()
            if not v:
                continue
            if name in ("min_conf", "max_conf"):
                try:
                    values[name] = float(v)
                except ValueError:
                    raise ConfigError(f"{name}: expected a number from 0 to 100; "
                                      f"got {v!r}.") from None
            elif name in ("page", "per_page"):
                if not v.isdigit() or len(v) > 9:
                    raise ConfigError(f"{name}: expected a whole number from 1; "
                                      f"got {v!r}.") from None
                values[name] = int(v)
            elif name == "ready":
                if v not in ("0", "1"):
                    raise ConfigError(f"ready: expected 1 (only scans that can be scored "
                                      f"without editing) or 0; got {v!r}.")
                values[name] = v == "1"
            else:
                values[name] = v
        return cls(**values)

    def url(self, **changes: Any) -> str:
        """The queue's URL for this query with ``changes`` (defaults left out)."""
        q = {**asdict(self), **changes}
        default = asdict(QueueQuery())
        pairs = {k: (int(v) if isinstance(v, bool) else f"{v:g}" if isinstance(v, float)
                     else v) for k, v in q.items() if v is not None and v != default[k]}
        return "/?" + urlencode(pairs) if pairs else "/"


@dataclass(frozen=True)
class QueueResult:
    """One page of the queue.

    Attributes:
        rows: The scans of the page (dicts; ``open_flag_list`` holds each open flag).
        total: Scans matching the filters (all pages).
        counts: Scans per status, over the whole queue.
        run_id: The newest finished training run, or None.
        target: The metric its predictions are of, or None.
        level_note: Why the reading-level column is empty, when it is for every scan.
        query: The query answered.
    """

    rows: list[dict]
    total: int
    counts: dict[str, int]
    run_id: str | None
    target: str | None
    level_note: str | None
    query: QueueQuery = field(default_factory=QueueQuery)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))

    def to_json(self) -> dict:
        return {"total": self.total, "page": self.query.page, "pages": self.pages,
                "per_page": self.query.per_page, "counts": self.counts, "run_id": self.run_id,
                "target": self.target, "metric": metric_label(self.target),
                "level_note": self.level_note, "scans": self.rows}


def _connect(lakehouse: Lakehouse) -> duckdb.DuckDBPyConnection:
    """DuckDB with the queue's tables registered (empty when absent)."""
    con = duckdb.connect(":memory:")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    for name in _TABLES:
        try:
            con.register(name, lakehouse.dataset(name))
        except TableNotFoundError:
            con.register(name, TABLES[name].schema.empty_table())
    return con


_QUEUE_SQL = """
WITH fl AS (
    SELECT scan_id, count(*) AS open_flags
    FROM flags WHERE resolved_at IS NULL GROUP BY scan_id
), tp AS (
    SELECT p.scan_id, array_to_string(list_slice(list_filter(list_transform(
               string_split(CAST(p.text AS VARCHAR), chr(10)),
               lambda x: trim(x, ' ' || chr(9) || chr(13))), lambda x: x <> ''), 1, 2),
               ' / ') AS lines
    FROM ocr_pages p JOIN scans s
      ON p.scan_id = s.scan_id AND p.scan_sha256 IS NOT DISTINCT FROM s.sha256
    WHERE p.page_no = 1
), pr AS (
    SELECT book_id,
           -- the newest row of a text (eval's and `score --save`'s may both be there): the
           -- one catalog/readiness.py judges
           arg_max(prediction, COALESCE(created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'))
               FILTER (WHERE variant = '{ocr}') AS pred_ocr,
           arg_max(prediction, COALESCE(created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'))
               FILTER (WHERE variant = '{edited}') AS pred_edited
    FROM predictions WHERE run_id = $run_id AND target = $target GROUP BY book_id
), rd AS (
    SELECT book_id, ready, n_windows, std_error FROM ({readiness}) WHERE target = $target
), q AS (
    SELECT s.scan_id, s.book_id, s.source, s.n_pages, s.pages_done, s.status,
           s.mean_confidence, s.reason,
           CASE WHEN b.title IS NOT NULL THEN b.title ELSE left(tp.lines, 160) END AS title,
           b.author AS author,
           b.title IS NULL AND tp.lines IS NOT NULL AS title_from_page,
           COALESCE(fl.open_flags, 0) AS open_flags,
           pr.pred_ocr, pr.pred_edited, pr.pred_edited - pr.pred_ocr AS pred_diff,
           COALESCE(rd.ready, false) AS ready, rd.n_windows, rd.std_error AS pred_se
    FROM scans s
    LEFT JOIN books b ON b.book_id = s.book_id
    LEFT JOIN tp ON tp.scan_id = s.scan_id
    LEFT JOIN fl ON fl.scan_id = s.scan_id
    LEFT JOIN pr ON pr.book_id = s.book_id
    LEFT JOIN rd ON rd.book_id = s.book_id
)
""".replace("{readiness}", readiness_sql()).replace("{ocr}", OCR).replace("{edited}", EDITED)


def _where(query: QueueQuery) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if query.status:
        clauses.append("status = $status")
        params["status"] = query.status
    if query.flag == "any":
        clauses.append("open_flags > 0")
    elif query.flag == "none":
        clauses.append("open_flags = 0")
    elif query.flag:
        clauses.append("scan_id IN (SELECT scan_id FROM flags "
                       "WHERE resolved_at IS NULL AND flag = $flag)")
        params["flag"] = query.flag
    if query.ready:
        clauses.append("ready")
    if query.min_conf is not None:
        clauses.append("mean_confidence >= $min_conf")
        params["min_conf"] = query.min_conf
    if query.max_conf is not None:
        clauses.append("mean_confidence <= $max_conf")
        params["max_conf"] = query.max_conf
    if query.q:
        like = "%" + re.sub(r"([\\%_])", r"\\\1", query.q) + "%"
        isbn = re.sub(r"[\s-]", "", query.q)
        clauses.append(
            "(title ILIKE $q ESCAPE '\\' OR author ILIKE $q ESCAPE '\\' "
            "OR scan_id ILIKE $q ESCAPE '\\' OR source ILIKE $q ESCAPE '\\' "
            "OR replace(book_id, '-', '') ILIKE $isbn ESCAPE '\\')")
        params["q"] = like
        params["isbn"] = "%" + re.sub(r"([\\%_])", r"\\\1", isbn or query.q) + "%"
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def newest_run(con: duckdb.DuckDBPyConnection) -> tuple[str | None, str | None]:
    """``(run_id, target)`` of the newest finished run and the metric of its predictions."""
    got = con.execute(NEWEST_RUN_SQL).fetchone()
    if got is None:
        return None, None
    target = con.execute(
        "SELECT target FROM predictions WHERE run_id = $r AND target IS NOT NULL "
        "GROUP BY target ORDER BY (target = 'bt_easiness') DESC, count(*) DESC, target "
        "LIMIT 1", {"r": got[0]}).fetchone()
    return got[0], (target[0] if target else None)


def query_queue(lakehouse: Lakehouse, query: QueueQuery | None = None) -> QueueResult:
    """One page of the review queue, filtered, sorted and paginated in SQL.

    Args:
        lakehouse: The catalog (read at its latest versions).
        query: Filters, sort and page; the default is the first page in share order.

    Returns:
        The page's scans with the total, the counts per status and the run predictions
        come from.
    """
    query = query or QueueQuery()
    con = _connect(lakehouse)
    try:
        counts = dict(con.execute("SELECT status, count(*) FROM scans GROUP BY status "
                                  "ORDER BY status").fetchall())
        run_id, target = newest_run(con)
        if run_id is None:
            note = "no trained run yet"
        elif target is None:
            note = f"run {run_id} has no predictions yet: run `corpus eval` on it"
        else:
            note = None
        where, params = _where(query)
        base = {"run_id": run_id, "target": target}
        total = con.execute(f"{_QUEUE_SQL} SELECT count(*) FROM q{where}",
                            {**base, **params}).fetchone()[0]
        order = f"{SORTS[query.sort]} {query.dir.upper()} NULLS LAST, {QUEUE_ORDER}"
        cur = con.execute(
            f"{_QUEUE_SQL} SELECT * FROM q{where} ORDER BY {order} LIMIT $limit OFFSET $offset",
            {**base, **params, "limit": query.per_page,
             "offset": (query.page - 1) * query.per_page})
        rows = _rows(cur)
        open_flags: dict[str, list[dict]] = {}
        if rows:
            cur = con.execute(
                "SELECT flag_id, scan_id, flag, note, editor, created_at FROM flags "
                "WHERE resolved_at IS NULL AND list_contains($ids, scan_id) "
                "ORDER BY created_at, flag_id", {"ids": [r["scan_id"] for r in rows]})
            for f in _rows(cur):
                open_flags.setdefault(f["scan_id"], []).append(f)
    finally:
        con.close()
    for r in rows:
        r["open_flag_list"] = open_flags.get(r["scan_id"], [])
        if r["pred_ocr"] is not None:
            r["level_note"] = None
        elif note:
            r["level_note"] = note
        elif not r["book_id"]:
            r["level_note"] = "no book id for this scan"
        elif not r["pages_done"]:
            r["level_note"] = "no OCR text yet"
        else:
            r["level_note"] = f"not scored by run {run_id}"
    return QueueResult(rows=rows, total=total, counts=counts, run_id=run_id, target=target,
                       level_note=note, query=query)


def scan_neighbours(lakehouse: Lakehouse, scan_id: str) -> tuple[str | None, str | None]:
    """``(previous, next)`` scan ids around ``scan_id`` in the queue's default order (the
    share's, as on the first queue page), None at either end or for an unknown scan."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_external_access = false")
        try:
            con.register("scans", lakehouse.dataset("scans"))
        except TableNotFoundError:
            return None, None
        got = con.execute(
            f"SELECT prev, next FROM (SELECT scan_id, lag(scan_id) OVER w AS prev, "
            f"lead(scan_id) OVER w AS next FROM scans WINDOW w AS (ORDER BY {QUEUE_ORDER})) "
            "WHERE scan_id = $id", {"id": scan_id}).fetchone()
    finally:
        con.close()
    return (got[0], got[1]) if got else (None, None)


def queue_sql(status: str | None = None) -> str:
    """The scans queue as one SELECT over ``scans``, in :data:`QUEUE_ORDER`.

    Args:
        status: Only scans with this status (one of :data:`STATUSES`); all when None.

    Returns:
        SQL giving ``scan_id, book_id, status, n_pages, pages_done, confidence`` (the mean
        OCR confidence, one decimal), ``reason, source``.

    Raises:
        ConfigError: ``status`` is not one of :data:`STATUSES`.
    """
    where = ""
    if status is not None:
        if status not in STATUSES:
            raise ConfigError(f"status: expected one of {', '.join(STATUSES)}; "
                              f"got {status!r}.")
        where = f" WHERE status = '{status}'"  # safe to inline: checked against STATUSES
    return ("SELECT scan_id, book_id, status, n_pages, pages_done, "
            "round(mean_confidence, 1) AS confidence, reason, source FROM scans"
            f"{where} ORDER BY {QUEUE_ORDER}")


def ready_scans(lakehouse: Lakehouse) -> list[dict]:
    """The scans that can be scored without editing (:mod:`catalog.readiness`), in queue
    order: ``scan_id, book_id, status, run_id, target, prediction, n_windows, std_error``."""
    con = _connect(lakehouse)
    try:
        cur = con.execute(
            f"SELECT s.scan_id, s.book_id, s.status, r.run_id, r.target, r.prediction, "
            f"r.n_windows, r.std_error FROM scans s JOIN ({readiness_sql()}) r "
            f"ON r.book_id = s.book_id WHERE r.ready "
            f"ORDER BY {QUEUE_ORDER}, r.target")
        return _rows(cur)
    finally:
        con.close()


READY_NOTE = (f"can be scored without editing: its raw OCR prediction varies little over "
              f"its windows (standard error <= {READY_SE:g})")
