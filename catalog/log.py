"""Logging and progress helpers shared by every stage."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

# The width of tables written to a file or a pager: wide enough that no row is folded (the
# writers cut a cell at 200 characters), where rich would fold every value at 80 columns.
PIPED_WIDTH = 10_000


def output_width(stream: IO[str] | None = None) -> int | None:
    """The ``width`` for a rich Console writing to ``stream`` (default stdout).

    None (rich measures the terminal) on a terminal or when ``COLUMNS`` is set; otherwise
    :data:`PIPED_WIDTH`, so that a table piped to a file or to ``less`` keeps each value whole.
    """
    stream = sys.stdout if stream is None else stream
    if os.environ.get("COLUMNS"):
        return None
    try:
        return None if stream.isatty() else PIPED_WIDTH
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return PIPED_WIDTH


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger once for a CLI process (0 = warnings, 1 = info, 2+ = debug)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def progress(
    items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
    summary: bool = False, note: Callable[[], str] | None = None,
) -> Iterator[T]:
    """Wrap long work in a progress bar on stderr (rate and ETA when ``total`` is known);
    silent when stderr is not a terminal, except for one summary line at the end with
    ``summary`` (what ran, how many, how fast, and ``note()`` after it)."""
    from tqdm.auto import tqdm  # imported here: every CLI call would pay for it otherwise

    on_terminal = sys.stderr.isatty()
    t0 = time.perf_counter()
    n = 0
    for item in tqdm(items, desc=desc, total=total, unit=unit, disable=not on_terminal,
                     leave=False):
        n += 1
        yield item
    if summary and not on_terminal:
        seconds = time.perf_counter() - t0
        rate = f"{n / seconds:,.1f}" if seconds > 0 else "-"
        print(f"{desc}: {n:,} {unit}{'' if n == 1 else 's'} in {seconds:,.1f} s "
              f"({rate} {unit}/s){note() if note else ''}", file=sys.stderr, flush=True)
