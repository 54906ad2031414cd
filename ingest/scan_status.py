"""A scan's ``status``: the one rule, shared by the two writers of the ``scans`` table's state.

The rule: a scan's status follows its **latest open flag** (``ok`` → ``accepted``, any other
flag → ``flagged``); with no open flag it is its **OCR state**: ``failed`` when its last OCR
run failed (``reason`` set), ``ocr_done`` when every page is recognised (``pages_done >=
n_pages``, at least one page), ``new`` otherwise.

Two writers change a ``scans`` row after ingest registered it, and each updates only the
columns it owns, by a column-wise merge retried on a fresh snapshot when another writer
commits first (:meth:`catalog.Lakehouse.merge` with ``columns=``): OCR (:mod:`ingest.ocr`)
owns ``pages_done, reason, ocr_engine, mean_confidence``; flags (:mod:`ingest.flags`) own
nothing else. Both write ``status`` (and ``updated_at``), each with the SQL expression of
:func:`status_sql`, evaluated on the snapshot its commit lands on, so neither reverts the
other:

- OCR sets its new OCR state unless the row's status is already a flag status (an editor's
  verdict outranks OCR finishing; the OCR columns are updated either way);
- a flag writer (adding or resolving a flag) sets the status of the latest open flag or,
  when no flag is open any more, the OCR state computed from the row's OCR columns *as they
  are at commit time* (a flag resolved while OCR finishes still ends ``ocr_done``). It then
  reads the flags again and repeats if another editor's flag landed meanwhile, so two
  editors flagging at once end on the latest flag.

Hence the invariant: ``status`` is ``flagged``/``accepted`` exactly when the scan has an open
flag, and otherwise what its OCR columns say. A writer that resets a scan's OCR columns (a
rescan registered by ingest) keeps it by writing ``status`` as OCR does,
``status_sql(flag_from="t", ocr_from="s")``.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow.compute as pc

from catalog import Lakehouse, Lineage, TableNotFoundError

FLAG_STATUS = {"ok": "accepted"}  # every other flag: "flagged"
FLAG_STATUSES = ("flagged", "accepted")
SYNC_ATTEMPTS = 5


def flag_status(flag: str) -> str:
    """The status an open flag gives its scan."""
    return FLAG_STATUS.get(flag, "flagged")


def ocr_state_sql(alias: str) -> str:
    """The OCR state (``failed|ocr_done|new``) as SQL over the OCR columns of row ``alias``
    (``s`` for a merge's source row, ``t`` for the table's row); pages from ``t``."""
    return (f"CASE WHEN {alias}.reason IS NOT NULL THEN 'failed' "
            f"WHEN {alias}.pages_done > 0 AND {alias}.pages_done >= COALESCE(t.n_pages, 0) "
            "THEN 'ocr_done' ELSE 'new' END")


def ocr_state(row: dict) -> str:
    """The OCR state of a ``scans`` row (the rule of :func:`ocr_state_sql`, in Python)."""
    if row.get("reason") is not None:
        return "failed"
    done = row.get("pages_done") or 0
    if done > 0 and done >= (row.get("n_pages") or 0):
        return "ocr_done"
    return "new"


def status_sql(*, flag_from: str, ocr_from: str) -> str:
    """The status rule as one SQL expression for a merge into ``scans``: the flag status of
    row ``flag_from`` when it holds one, else the OCR state of row ``ocr_from``."""
    flags = ", ".join(f"'{s}'" for s in FLAG_STATUSES)
    return (f"CASE WHEN {flag_from}.status IN ({flags}) THEN {flag_from}.status "
            f"ELSE {ocr_state_sql(ocr_from)} END")


def latest_open_flag(lakehouse: Lakehouse, scan_id: str) -> tuple[str, str] | None:
    """``(flag_id, flag)`` of the scan's newest unresolved flag, or None."""
    try:
        flags = lakehouse.read("flags", columns=["flag_id", "scan_id", "flag", "created_at",
                                                 "resolved_at"],
                               filter=pc.field("scan_id") == scan_id).to_pylist()
    except TableNotFoundError:
        return None
    open_ = [f for f in flags if f["resolved_at"] is None]
    if not open_:
        return None
    latest = max(open_, key=lambda f: (f["created_at"], f["flag_id"]))
    return latest["flag_id"], latest["flag"]


def sync_status(lakehouse: Lakehouse, scan_id: str, *, lineage: Lineage, now: datetime
                ) -> str | None:
    """Set the scan's status from its flags (see the module docstring); returns it."""
    latest = latest_open_flag(lakehouse, scan_id)
    for _ in range(SYNC_ATTEMPTS):
        # "new" stands for "no open flag": the expression then takes the OCR state
        status = flag_status(latest[1]) if latest else "new"
        lakehouse.merge(
            "scans", [{"scan_id": scan_id, "status": status, "updated_at": now}],
            lineage=lineage, insert=False,
            columns={"status": status_sql(flag_from="s", ocr_from="t"),
                     "updated_at": "s.updated_at"})
        again = latest_open_flag(lakehouse, scan_id)
        if again == latest:
            break
        latest = again  # another editor's flag landed meanwhile: apply the newest
    return current_status(lakehouse, scan_id)


def current_status(lakehouse: Lakehouse, scan_id: str) -> str | None:
    """The scan's status as the table has it now (None for an unknown scan)."""
    rows = lakehouse.read("scans", columns=["scan_id", "status"],
                          filter=pc.field("scan_id") == scan_id).to_pylist()
    return rows[0]["status"] if rows else None
