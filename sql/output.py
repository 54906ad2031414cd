"""Write query results as a terminal table, CSV, JSON or Parquet, streaming batch by batch."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from catalog import CorpusError

FORMATS = ("table", "csv", "json", "parquet")


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def write_result(
    reader: pa.RecordBatchReader,
    *,
    fmt: str = "table",
    out: str | None = None,
    stream: IO[str] | None = None,
    max_rows: int = 1000,
) -> int:
    """Write a result in ``fmt``; returns the number of rows written.

    ``table`` prints at most ``max_rows`` rows; ``csv`` and ``json`` go to stdout (or
    ``out``); ``parquet`` needs ``out``. Results stream: memory stays at one batch.
    """
    if fmt not in FORMATS:
        raise CorpusError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    stream = stream or sys.stdout
    if fmt == "parquet":
        if not out:
            raise CorpusError("--format parquet writes a file: give it with --out PATH.")
        n = 0
        with pq.ParquetWriter(out, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)
                n += batch.num_rows
        return n
    if out:
        with open(out, "w", encoding="utf-8", newline="") as f:
            return write_result(reader, fmt=fmt, stream=f, max_rows=max_rows)
    if fmt == "csv":
        # The header by the csv module (pyarrow always quotes header names), rows by pyarrow.
        csv.writer(stream, lineterminator="\n").writerow(reader.schema.names)
        opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        n = 0
        for batch in reader:
            buf = pa.BufferOutputStream()
            pacsv.write_csv(pa.Table.from_batches([batch], reader.schema), buf, opts)
            stream.write(buf.getvalue().to_pybytes().decode("utf-8"))
            n += batch.num_rows
        return n
    if fmt == "json":
        n = 0
        stream.write("[")
        for batch in reader:
            for row in batch.to_pylist():
                stream.write(("," if n else "") + "\n" + json.dumps(row, default=_jsonable))
                n += 1
        stream.write("\n]\n")
        return n
    return _print_table(reader, stream=stream, max_rows=max_rows)


def _print_table(reader: pa.RecordBatchReader, *, stream: IO[str], max_rows: int) -> int:
    table = Table(show_header=True, header_style="bold", show_lines=False)
    for name in reader.schema.names:
        table.add_column(name, overflow="fold")
    shown = total = 0
    for batch in reader:
        total += batch.num_rows
        if shown >= max_rows:
            continue
        for row in batch.slice(0, max_rows - shown).to_pylist():
            table.add_row(*[_cell(v) for v in row.values()])
            shown += 1
    console = Console(file=stream, soft_wrap=False)
    console.print(table)
    more = f" (showing {shown})" if shown < total else ""
    console.print(f"{total} row{'s' if total != 1 else ''}{more}", style="dim")
    return total


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "..."
