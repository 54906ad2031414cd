"""Lineage: what every commit read, with which config, by which code.

A write names the table versions it read (``inputs``), any outside sources (a share path, an
imported file), its resolved config and the operation. That record goes into the Delta
commit's metadata, so lineage is a query over table histories, not a separate document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from catalog.version import code_version

META_KEY = "corpus"  # one JSON value per commit, so every reader finds it under one name


@dataclass(frozen=True)
class Lineage:
    """What a write was derived from.

    Attributes:
        operation: The stage or command that wrote (``ingest``, ``ocr``, ``mine`` ...).
        inputs: Catalog tables read and the version pinned for each, ``{"texts": 7}``.
        sources: Things outside the catalog that were read (paths, URIs, with hashes).
        config: The resolved configuration of the run (JSON-serialisable).
    """

    operation: str
    inputs: Mapping[str, int] = field(default_factory=dict)
    sources: Sequence[str] = ()
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.operation:
            raise ValueError("Lineage.operation must name the stage or command that writes")
        for table, version in self.inputs.items():
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise ValueError(
                    f"Lineage input {table!r} must be pinned to a table version (an int >= 0), "
                    f"got {version!r}"
                )

    def to_metadata(self) -> dict[str, str]:
        """The commit metadata recorded with a write."""
        record = {
            "operation": self.operation,
            "inputs": dict(self.inputs),
            "sources": list(self.sources),
            "config": dict(self.config),
            "code_version": code_version(),
        }
        return {META_KEY: json.dumps(record, sort_keys=True, default=str)}


@dataclass(frozen=True)
class Commit:
    """One entry of a table's history, with the Corpus lineage record decoded."""

    table: str
    version: int
    timestamp_ms: int
    operation: str
    delta_operation: str
    inputs: dict[str, int]
    sources: list[str]
    config: dict[str, Any]
    code_version: str | None
    metrics: dict[str, Any]

    @classmethod
    def from_history(cls, table: str, entry: Mapping[str, Any]) -> Commit:
        """Decode a deltalake ``history()`` entry."""
        raw = entry.get(META_KEY)
        record: dict[str, Any] = {}
        if isinstance(raw, str):
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                record = {}
        elif isinstance(raw, dict):
            record = raw
        delta_op = str(entry.get("operation", ""))
        return cls(
            table=table,
            version=int(entry["version"]),
            timestamp_ms=int(entry.get("timestamp", 0)),
            operation=record.get("operation") or delta_op.lower(),
            delta_operation=delta_op,
            inputs={k: int(v) for k, v in (record.get("inputs") or {}).items()},
            sources=list(record.get("sources") or []),
            config=dict(record.get("config") or {}),
            code_version=record.get("code_version"),
            metrics=dict(entry.get("operationMetrics") or {}),
        )


@dataclass
class LineageNode:
    """``table@version`` with the commits that built it and the table versions they read."""

    table: str
    version: int
    commits: list[Commit]
    parents: list[LineageNode]
    sources: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, for ``--format json``."""
        return {
            "table": self.table,
            "version": self.version,
            "operations": sorted({c.operation for c in self.commits}),
            "code_versions": sorted({c.code_version for c in self.commits if c.code_version}),
            "sources": self.sources,
            "inputs": [p.to_dict() for p in self.parents],
        }

    def edges(self) -> set[tuple[str, int, str, int]]:
        """All ``(child, child_version, parent, parent_version)`` pairs of the graph."""
        out: set[tuple[str, int, str, int]] = set()
        for p in self.parents:
            out.add((self.table, self.version, p.table, p.version))
            out |= p.edges()
        return out
