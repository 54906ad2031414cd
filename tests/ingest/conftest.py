"""The real sample share, unpacked once per test session with its modification times."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

# ../shared/data beside the checkout (as CI has it), or CORPUS_SHARED_DATA.
SHARED = Path(os.environ.get("CORPUS_SHARED_DATA")
              or Path(__file__).resolve().parents[2].parent / "shared" / "data")


@pytest.fixture(scope="session")
def share_truth() -> dict:
    """The answer key of the sample share."""
    return json.loads((SHARED / "legacy_share.truth.json").read_text())


@pytest.fixture(scope="session")
def sample_share(tmp_path_factory) -> Path:
    """../shared/data/legacy_share.tar.gz unpacked (read-only use: copy before changing)."""
    dest = tmp_path_factory.mktemp("share")
    with tarfile.open(SHARED / "legacy_share.tar.gz") as tar:
        tar.extractall(dest, filter="tar")  # keeps modification times, refuses unsafe paths
    return dest / "legacy_share"


@pytest.fixture(scope="session")
def small_share(tmp_path_factory) -> Path:
    """The bundled sample share (corpus/data/sample_share.tar.gz) unpacked; copy to change."""
    from corpus.demo import sample_share_tarball

    dest = tmp_path_factory.mktemp("small")
    with tarfile.open(sample_share_tarball()) as tar:
        tar.extractall(dest, filter="tar")
    return dest / "legacy_share"
