"""catalog.log.setup_logging: other libraries quiet at verbosity 0, all back with -v."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from catalog.log import QUIET_ENV, VERBOSITY_ENV, setup_logging


@pytest.fixture
def clean_env(monkeypatch):
    # recorded, so the test leaves the environment as it found it
    for name in (*QUIET_ENV, VERBOSITY_ENV):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    yield
    setup_logging(1)  # undoes the quiet settings this process made


def _emit() -> None:
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("no kernels module")
    logging.getLogger("somelib").error("somelib failed")
    logging.getLogger("train.shards").warning("2 books left out")
    warnings.warn_explicit("old API", FutureWarning, "somelib/api.py", 1, module="somelib.api",
                           registry={})
    warnings.warn_explicit("ours", UserWarning, "ingest/x.py", 1, module="ingest.x",
                           registry={})


def test_quiet_by_default_and_everything_back_with_v(clean_env, capsys):
    with warnings.catch_warnings(record=True) as shown:  # the warnings the filters let by
        setup_logging(0)
        assert {k: os.environ[k] for k in QUIET_ENV} == QUIET_ENV  # for child processes
        assert os.environ[VERBOSITY_ENV] == "0"
        _emit()
        err = capsys.readouterr().err
        assert "no kernels module" not in err
        assert "somelib failed" in err  # another library's error still shows
        assert "2 books left out" in err  # our records always do, and our warnings
        assert [str(w.message) for w in shown] == ["ours"]

        shown.clear()
        setup_logging(1)
        assert not any(k in os.environ for k in QUIET_ENV) and os.environ[VERBOSITY_ENV] == "1"
        _emit()
        assert "no kernels module" in capsys.readouterr().err
        assert [str(w.message) for w in shown] == ["old API", "ours"]


def test_a_setting_the_user_made_is_kept(clean_env, monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    with warnings.catch_warnings():
        setup_logging(0)
        setup_logging(1)
    assert os.environ["PYTHONWARNINGS"] == "error::DeprecationWarning"


def test_a_child_process_takes_its_parents_verbosity(clean_env):
    os.environ[VERBOSITY_ENV] = "1"
    setup_logging(level=logging.DEBUG)  # a rank: its own level, the parent's quietness
    assert logging.getLogger().level == logging.DEBUG
    assert not any(k in os.environ for k in QUIET_ENV)
    os.environ[VERBOSITY_ENV] = "0"
    setup_logging(level=logging.INFO)
    assert logging.getLogger().level == logging.INFO and os.environ["PYTHONWARNINGS"] == "ignore"
