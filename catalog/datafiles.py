"""Data files written by workers, committed later by the driver in one Delta commit.

A stage whose output is large (noisy texts) does not stream it back to the driver: each
worker writes its rows as a Parquet file inside the table's folder and hands back only the
file's description, :class:`DataFile` (path, size, row count, column statistics). The driver
collects them and commits them all at once with :meth:`catalog.tables.Lakehouse.commit_files`,
with the usual lineage. Until that commit no reader sees the files (a Delta table is what its
log lists); a job that fails before it leaves them behind as orphans, which ``corpus vacuum
TABLE`` removes.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.config import LakehouseConfig
from catalog.schemas import spec

if TYPE_CHECKING:
    import pyarrow as pa

STATS_CHARS = 32  # string columns get min/max statistics only when both are this short


@dataclass(frozen=True)
class DataFile:
    """A Parquet file written into a table's folder, not yet committed."""

    table: str
    path: str            # relative to the table's folder
    size: int
    rows: int
    stats: str           # Delta ``stats`` JSON (numRecords, nullCount, min/max)
    modification_time: int  # ms since the epoch

    def add_action(self):
        """The Delta add action of this file."""
        from deltalake.transaction import AddAction

        return AddAction(path=self.path, size=self.size, partition_values={},
                         modification_time=self.modification_time, data_change=True,
                         stats=self.stats)


@functools.lru_cache(maxsize=8)
def _table_store(config: LakehouseConfig, table: str):
    from catalog.storage import open_store
    from catalog.tables import TABLES_DIR

    return open_store(config, base=f"{TABLES_DIR}/{table}")


def file_stats(table: pa.Table) -> str:
    """Delta statistics of ``table``'s rows: the row count, nulls per column, and minimum and
    maximum of integer columns and of short string columns (what readers skip files by)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nulls, lo, hi = {}, {}, {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        if pa.types.is_nested(t):
            continue
        nulls[name] = col.null_count
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            continue
        if col.null_count == len(col):
            continue
        mm = pc.min_max(col).as_py()
        if pa.types.is_integer(t) or (len(mm["min"]) <= STATS_CHARS
                                      and len(mm["max"]) <= STATS_CHARS):
            lo[name], hi[name] = mm["min"], mm["max"]
    return json.dumps({"numRecords": table.num_rows, "minValues": lo, "maxValues": hi,
                       "nullCount": nulls})


def write_data_file(config: LakehouseConfig, table: str, data: Any) -> DataFile:
    """Write rows of ``table`` (conformed to its schema) as one Parquet file in its folder,
    without committing it; returns what the driver commits (:class:`DataFile`)."""
    import pyarrow.parquet as pq

    from catalog.tables import conform

    rows = conform(spec(table), data)
    name = f"part-{uuid.uuid4().hex}-c000.zstd.parquet"
    with tempfile.TemporaryDirectory(prefix="corpus-datafile-") as tmp:
        local = Path(tmp) / name
        pq.write_table(rows, local, compression="zstd", row_group_size=1024)
        size = os.path.getsize(local)
        _table_store(config, table).put_file(name, local)
    return DataFile(table=table, path=name, size=size, rows=rows.num_rows,
                    stats=file_stats(rows), modification_time=int(time.time() * 1000))
