"""Logging and progress helpers shared by every stage."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
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
    items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Wrap long work in a progress bar on stderr; silent when stderr is not a terminal."""
    from tqdm.auto import tqdm  # imported here: every CLI call would pay for it otherwise

    yield from tqdm(
        items, desc=desc, total=total, unit=unit, disable=not sys.stderr.isatty(), leave=False
    )
