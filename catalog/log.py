"""Logging and progress helpers shared by every stage."""

from __future__ import annotations

import logging
import os
import re
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


# Our own packages: their log records and warnings reach the user at every verbosity.
OWN_PACKAGES = ("catalog", "corpus", "ingest", "noise", "sql", "train", "bench", "__main__")
# The verbosity of the `corpus` call, handed to the processes it starts: torchrun ranks call
# setup_logging() with it and are exactly as quiet (forked pool workers inherit the settings).
VERBOSITY_ENV = "CORPUS_VERBOSITY"
# What quiets the libraries in this process and in every process it starts; read by them at
# import time, so these are set before any of them is imported. A value the user set is kept.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars, hub bars
    "TRANSFORMERS_VERBOSITY": "error",    # transformers' own logger (it has its own handler)
    "PYTHONWARNINGS": "ignore",           # FutureWarnings and the like, in child processes
    # other libraries' own tqdm bars (transformers' GGUF conversion): the default of every
    # tqdm made after tqdm is imported; ours (progress()) passes `disable` itself
    "TQDM_DISABLE": "1",
}

_quiet: dict[str, object] = {"env": set(), "filters": []}  # what this process changed


class _OwnRecordsOnly(logging.Filter):
    """Let our packages' records through, and other libraries' errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".")[0] in OWN_PACKAGES


def setup_logging(verbosity: int | None = None, *, level: int | None = None) -> None:
    """Configure logging and warnings once per process (0 = warnings, 1 = info, 2+ = debug).

    At verbosity 0 the third-party noise is off: other libraries' log records below ERROR
    (bitsandbytes' "kernels" warning), Python warnings raised outside our packages
    (transformers' FutureWarnings), transformers' weight-loading progress bars. The same
    settings reach child processes through the environment (:data:`QUIET_ENV`,
    :data:`VERBOSITY_ENV`). With ``-v`` all of it comes back.

    Args:
        verbosity: The CLI's count of ``-v``; None in a child process (a torchrun rank, a
            worker): the verbosity its parent recorded in ``CORPUS_VERBOSITY``, else 0.
        level: The root level when it is not the verbosity's (a rank logs INFO into its own
            log file at any verbosity).
    """
    if verbosity is None:
        try:
            verbosity = int(os.environ.get(VERBOSITY_ENV) or 0)
        except ValueError:
            verbosity = 0
    if level is None:
        level = (logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1
                 else logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    os.environ[VERBOSITY_ENV] = str(verbosity)
    _quiet_libraries(verbosity <= 0)


def _quiet_libraries(quiet: bool) -> None:
    """Turn the third-party noise off (``quiet``) or back on; idempotent, reversible."""
    import warnings

    changed_env: set[str] = _quiet["env"]  # type: ignore[assignment]
    ours: list = _quiet["filters"]  # type: ignore[assignment]
    # undo what an earlier call did first: a process that calls again with -v gets it all back
    for name in changed_env:
        os.environ.pop(name, None)
    changed_env.clear()
    if ours:
        warnings.filters[:] = [f for f in warnings.filters if f not in ours]
        # what warnings.filterwarnings does after a change (drops cached decisions)
        getattr(warnings, "_filters_mutated", lambda: None)()
        ours.clear()
    if quiet:
        for name, value in QUIET_ENV.items():
            if name not in os.environ:
                os.environ[name] = value
                changed_env.add(name)
        warnings.filterwarnings("ignore")
        own = "|".join(re.escape(p) for p in OWN_PACKAGES)
        warnings.filterwarnings("default", module=rf"({own})(\.|$)")
        ours.extend(warnings.filters[:2])
        for handler in logging.getLogger().handlers:
            handler.addFilter(_OwnRecordsOnly())
    # libraries imported before this call read their settings already: tell them directly
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is None:
        return
    from huggingface_hub import constants

    # the variable read at import wins: asking for bars against it would only warn
    locked = constants.HF_HUB_DISABLE_PROGRESS_BARS is True
    tf_logging = sys.modules.get("transformers.utils.logging")
    if quiet:
        hub.disable_progress_bars()
        if tf_logging is not None:
            tf_logging.set_verbosity_error()
            tf_logging.disable_progress_bar()
    else:
        if not locked:
            hub.enable_progress_bars()
        if tf_logging is not None:
            tf_logging.set_verbosity_warning()
            if not locked:
                tf_logging.enable_progress_bar()


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
