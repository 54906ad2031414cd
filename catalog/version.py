"""Code version recorded in every commit's lineage."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.cache
def package_version() -> str:
    """The installed ``corpus`` package's version (``0+unknown`` when it is not installed)."""
    from importlib import metadata  # ~30 ms to import; only writers need a code version

    try:
        return metadata.version("corpus")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def code_version() -> str:
    """Return the package version, plus the git commit (and ``.dirty``) when run from a checkout.

    Cached: it is asked for on every commit and cannot change while a process runs.
    """
    version = package_version()
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}{'.dirty' if dirty else ''}" if sha else version


def version_line() -> str:
    """What ``corpus --version`` prints: the package version and the code version that
    lineage records (``corpus 0.1.0 (code 0.1.0+g1a2b3c4d5e6f.dirty)``), so a commit in
    ``corpus history`` or ``corpus_commits`` can be matched with the code that wrote it."""
    return f"corpus {package_version()} (code {code_version()})"
