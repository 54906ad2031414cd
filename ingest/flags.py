"""Editors' flags on scans: what is wrong with a scan (or that it is fine).

Flags are appended (concurrent editors never overwrite each other's flags; Delta retries
an append that races another). Adding or resolving a flag then recomputes the scan's
``status`` by the rule of :mod:`ingest.scan_status`: the latest open flag (``ok`` →
``accepted``, others → ``flagged``), else the scan's OCR state. Only ``status`` and
``updated_at`` of the scan are written, decided at commit time, so an OCR run finishing at
the same moment keeps its pages and progress and a flag is never lost to it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pyarrow as pa

from catalog import ConfigError, CorpusError, Lakehouse, Lineage, TableNotFoundError
from ingest.scan_status import sync_status

FLAGS = ("rescan", "wrong_book", "needs_edit", "ok")


class FlagError(CorpusError):
    """A flag that cannot be recorded or resolved (unknown scan or flag id)."""


def _scan(lakehouse: Lakehouse, scan_id: str) -> dict:
    import pyarrow.compute as pc

    try:
        rows = lakehouse.read("scans", filter=pc.field("scan_id") == scan_id).to_pylist()
    except TableNotFoundError:
        rows = []
    if not rows:
        raise FlagError(f"No scan {scan_id!r}. List scans with `corpus scans`.")
    return rows[0]


def add_flag(lakehouse: Lakehouse, scan_id: str, *, flag: str, editor: str,
             note: str | None = None) -> str:
    """Record an editor's flag on a scan; returns the new flag id.

    ``ok`` accepts the scan; any other flag marks it ``flagged`` (see
    :mod:`ingest.scan_status`).
    """
    if flag not in FLAGS:
        raise ConfigError(f"Unknown flag {flag!r}: use one of {', '.join(FLAGS)}.")
    if not editor or not editor.strip():
        raise ConfigError("A flag needs the editor's name (--by NAME).")
    scan = _scan(lakehouse, scan_id)
    flag_id = uuid.uuid4().hex[:16]
    now = datetime.now(UTC)
    lineage = Lineage(operation="flag", inputs=lakehouse.pin("scans"),
                      config={"flag": flag, "editor": editor.strip(), "scan_id": scan_id})
    lakehouse.append("flags", [{
        "flag_id": flag_id, "scan_id": scan_id, "book_id": scan["book_id"], "flag": flag,
        "note": (note or "").strip() or None, "editor": editor.strip(), "created_at": now,
    }], lineage=lineage)
    sync_status(lakehouse, scan_id, now=now, lineage=Lineage(
        operation="flag", inputs=lakehouse.pin("flags", "scans"), config=lineage.config))
    return flag_id


def list_flags(lakehouse: Lakehouse, *, open_only: bool = False) -> pa.Table:
    """Flags, newest first (only unresolved ones with ``open_only``)."""
    try:
        flags = lakehouse.read("flags")
    except TableNotFoundError:
        from catalog import TABLES

        return TABLES["flags"].schema.empty_table()
    if open_only:
        flags = flags.filter(pa.compute.is_null(flags.column("resolved_at")))
    return flags.sort_by([("created_at", "descending")])


def resolve_flag(lakehouse: Lakehouse, flag_id: str, *, editor: str | None = None
                 ) -> str | None:
    """Mark a flag resolved (the scan was re-scanned, re-filed or edited) and recompute the
    scan's status: the next open flag's, or the OCR state when none is left.

    Args:
        lakehouse: The catalog.
        flag_id: The flag to resolve.
        editor: Who resolved it (kept in ``resolved_by``).

    Returns:
        The scan's status afterwards.
    """
    import pyarrow.compute as pc

    try:
        rows = lakehouse.read("flags", filter=pc.field("flag_id") == flag_id).to_pylist()
    except TableNotFoundError:
        rows = []
    if not rows:
        raise FlagError(f"No flag {flag_id!r}. List flags with `corpus flags`.")
    if rows[0]["resolved_at"] is not None:
        raise FlagError(f"Flag {flag_id} was already resolved at {rows[0]['resolved_at']}.")
    now = datetime.now(UTC)
    flag = rows[0]
    who = (editor or "").strip() or None
    config = {"flag_id": flag_id, **({"editor": who} if who else {})}
    # the first resolution's time (and resolver) stays when two editors resolve it at once
    lakehouse.merge("flags", [{**flag, "resolved_at": now, "resolved_by": who}], insert=False,
                    columns={"resolved_at": "COALESCE(t.resolved_at, s.resolved_at)",
                             "resolved_by": "CASE WHEN t.resolved_at IS NULL "
                                            "THEN s.resolved_by ELSE t.resolved_by END"},
                    lineage=Lineage(operation="resolve_flag", inputs=lakehouse.pin("flags"),
                                    config=config))
    return sync_status(lakehouse, flag["scan_id"], now=now, lineage=Lineage(
        operation="resolve_flag", inputs=lakehouse.pin("flags", "scans"),
        config={**config, "scan_id": flag["scan_id"]}))
