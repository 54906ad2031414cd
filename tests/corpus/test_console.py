"""The console as a user sees it: quiet by default (no other library's warnings, banners or
weight-loading bars), all of it back with -v; `corpus --version`."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from catalog import Lakehouse, Lineage
from catalog.log import QUIET_ENV, VERBOSITY_ENV

REPO = Path(__file__).resolve().parents[2]


def corpus(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # the environment of a fresh shell: nothing a test in this process may have set
    env = {k: v for k, v in os.environ.items()
           if k not in QUIET_ENV and k != VERBOSITY_ENV and not k.startswith(("AWS_", "CORPUS_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "corpus.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """An untrained, seeded reading-level model on the packaged all-minilm-l6-v2 weights."""
    from train.model import ModelConfig, build_model, save_model

    tmp = tmp_path_factory.mktemp("console")
    return save_model(build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=2), seed=0),
                      tmp / "model")


def test_score_is_quiet_by_default_and_says_everything_with_v(saved_model, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("The cat sat on the mat. It was a sunny day.\n")
    args = ["--root", str(tmp_path / "lh"), "score", str(book), "--model", str(saved_model),
            "--format", "csv"]
    p = corpus(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1].startswith(f"{book},txt,")
    # stderr is our summary line and nothing else: loading the weights (transformers'
    # progress bar, its FutureWarning, bitsandbytes' missing "kernels" warning) says nothing
    for noise in ("Warning", "WARNING", "kernels", "Loading weights", "it/s", "%|"):
        assert noise not in p.stderr, p.stderr
    assert p.stderr.splitlines() == [f"1 scored, 0 failed [local, 1 worker(s)] "
                                     f"(model {saved_model})"]

    p = corpus("-v", *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Loading weights" in p.stderr  # the bar is back
    # and so are the libraries' warnings (which ones depends on the installed versions)
    assert "FutureWarning" in p.stderr or "kernels" in p.stderr, p.stderr
    assert p.stderr.splitlines()[-1] == (f"1 scored, 0 failed [local, 1 worker(s)] "
                                         f"(model {saved_model})")


def test_version_names_the_package_and_the_code_version_lineage_records(tmp_path):
    lh = Lakehouse(str(tmp_path / "lh"))
    lh.append("alignments", {"book_id": ["b"], "raw_variant": ["ocr"], "cer": [0.04]},
              lineage=Lineage(operation="test"))
    recorded = lh.history("alignments", limit=1)[0].code_version
    p = corpus("--version", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == f"corpus {metadata.version('corpus')} (code {recorded})\n"
    assert recorded.startswith(metadata.version("corpus"))  # and the commit in a checkout
    assert not (tmp_path / "lakehouse").exists()  # it opens no lakehouse
