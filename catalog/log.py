"""Logging and progress helpers shared by every stage."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


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
