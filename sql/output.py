"""Write query results as a terminal table, CSV, JSON or Parquet, streaming batch by batch."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from catalog import CorpusError
from catalog.log import output_width

# pyarrow and rich are imported by the formats that use them: `corpus sql --format csv`
# needs neither (DuckDB writes the CSV, see write_csv).
if TYPE_CHECKING:
    import pyarrow as pa

    from sql.session import SqlSession

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
    if fmt == "parquet" and not out:
        raise CorpusError("--format parquet writes a file: give it with --out PATH.")
    if out:
        _check_out(out)
    if fmt == "parquet":
        import pyarrow.parquet as pq

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
        # The header by the csv module (pyarrow always quotes header names), rows by pyarrow;
        # nested values (lists, structs, maps), which CSV has no form for, as JSON text.
        import pyarrow as pa
        import pyarrow.csv as pacsv

        csv.writer(stream, lineterminator="\n").writerow(reader.schema.names)
        opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        n = 0
        for batch in reader:
            buf = pa.BufferOutputStream()
            pacsv.write_csv(_flat(pa.Table.from_batches([batch], reader.schema)), buf, opts)
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


def write_csv(session: SqlSession, sql: str, *, out: str | None = None,
              stream: IO[str] | None = None) -> int:
    """Run ``sql`` in ``session`` and write its result as CSV to ``out`` or ``stream``
    (stdout); returns the number of rows.

    What `corpus sql --format csv` runs: DuckDB writes the rows (no Arrow conversion, no
    pyarrow import), quoted like :func:`write_result`'s CSV, nested values as JSON text;
    other values as DuckDB formats them (e.g. ``2025-01-01 10:00:00+00``).
    """
    if out:
        _check_out(out)
    done = session.csv_file(sql)
    if done is None:  # a statement without a result (COPY with --allow-files)
        return 0
    path, names, n = done
    try:
        if out:
            with open(out, "w", encoding="utf-8", newline="") as f:
                return _copy_csv(path, names, n, f)
        return _copy_csv(path, names, n, stream or sys.stdout)
    finally:
        os.remove(path)


def _copy_csv(path: str, names: list[str], n: int, stream: IO[str]) -> int:
    csv.writer(stream, lineterminator="\n").writerow(names)
    with open(path, encoding="utf-8", newline="") as f:
        while chunk := f.read(1 << 20):
            stream.write(chunk)
    return n


def _check_out(out: str) -> None:
    path = Path(out)
    if path.is_dir():
        raise CorpusError(f"--out {out}: that is a folder; give a file path inside it.")
    if not path.parent.is_dir():
        raise CorpusError(f"--out {out}: the folder {path.parent} does not exist; create it "
                          "first or write somewhere else.")


def _flat(table: pa.Table) -> pa.Table:
    """``table`` with every nested column as JSON text (one cell per value, NULL stays NULL)."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            cells = [None if v is None else json.dumps(v, default=_jsonable, ensure_ascii=False)
                     for v in table.column(i).to_pylist()]
            table = table.set_column(i, pa.field(field.name, pa.string()),
                                     pa.array(cells, pa.string()))
    return table


def _print_table(reader: pa.RecordBatchReader, *, stream: IO[str], max_rows: int) -> int:
    from rich.console import Console
    from rich.table import Table

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
    console = Console(file=stream, soft_wrap=False, width=output_width(stream))
    console.print(table)
    more = f" (showing {shown})" if shown < total else ""
    console.print(f"{total} row{'s' if total != 1 else ''}{more}", style="dim")
    return total


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "..."


def write_rows(rows: Iterable[dict], *, columns: Sequence[str], fmt: str, stream: IO[str],
               cell: Callable[[str, Any], str] | None = None,
               right: Sequence[str] = ()) -> int:
    """Write dict rows as they come: ``csv`` and ``json`` (one object per line) flush each
    row, so a long job's results show while it runs; ``table`` prints them at the end.

    Args:
        rows: The rows (any iterable, consumed once).
        columns: Column order (and the CSV header).
        fmt: ``table``, ``csv`` or ``json``.
        stream: Where to write.
        cell: ``(column, value) -> text`` for table cells (default: as :func:`write_result`).
        right: Columns aligned right in a table.

    Returns:
        The number of rows written.
    """
    if fmt not in ("table", "csv", "json"):
        raise CorpusError(f"Unknown format {fmt!r}; choose one of table, csv, json.")
    if fmt == "csv":
        w = csv.DictWriter(stream, fieldnames=list(columns), lineterminator="\n",
                           extrasaction="ignore")
        w.writeheader()
    kept, n = [], 0
    for r in rows:
        n += 1
        if fmt == "csv":
            w.writerow(r)
            stream.flush()
        elif fmt == "json":
            stream.write(json.dumps(r, default=_jsonable) + "\n")
            stream.flush()
        else:
            kept.append(r)
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        fmt_cell = cell or (lambda _c, v: _cell(v))
        t = Table()
        for c in columns:
            t.add_column(c, justify="right" if c in right else "left")
        for r in kept:
            t.add_row(*[fmt_cell(c, r.get(c)) for c in columns])
        Console(file=stream, soft_wrap=True, width=output_width(stream)).print(t)
    return n
