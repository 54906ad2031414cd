"""Fixtures for train/: shards of the bundled CLEAR sample, built once.

The helpers that set the sample up (``import_sample``, ``small_config``) are in
tests/helpers.py; ``sample_lakehouse`` (the sample imported, no shards) is in
tests/conftest.py, shared with the command tests in tests/corpus/.
"""

from __future__ import annotations

import pytest

from catalog import Lakehouse
from tests.helpers import import_sample, small_config
from train.shards import build_shards


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A local lakehouse with the sample imported and dataset ``clear`` built once.

    Returns ``(lakehouse, report)``. Tests must not write to it (it is shared).
    """
    lh = Lakehouse(str(tmp_path_factory.mktemp("built") / "lakehouse"))
    import_sample(lh)
    report = build_shards(lh, config=small_config())
    return lh, report
