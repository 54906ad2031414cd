"""`corpus shards export` as a user runs it: plain Parquet per split and a dataset card, a
non-empty folder refused without --force, a bad reference one `error:` line."""

from __future__ import annotations

import pyarrow.parquet as pq
from click.testing import CliRunner

from corpus.cli import cli
from tests.helpers import small_config
from train.shards import build_shards


def test_cli_shards_export(sample_lakehouse, tmp_path):
    lh = sample_lakehouse
    first = build_shards(lh, config=small_config())
    build_shards(lh, config=small_config(seq_len=32))  # a newer version of the same name
    out = tmp_path / "out"

    def export(*args: str):
        return CliRunner().invoke(cli, ["--root", lh.root, "shards", "export", *args], obj={})

    res = export(f"clear@{first.version}", "--to", str(out))
    assert res.exit_code == 0, res.output
    assert f"clear@{first.version} -> {out}" in res.output
    assert f"train.parquet: {first.samples['train']:,} samples" in res.output
    train = pq.read_table(out / "train.parquet")
    assert train.num_rows == first.samples["train"]
    assert max(len(x) for x in train.column("input_ids").to_pylist()) == 64  # the pinned one
    card = (out / "README.md").read_text()
    assert f"shards@{first.version}" in card and "| seq_len | 64 " in card
    # a non-empty folder: one error line, exit 2, nothing written
    before = (out / "train.parquet").stat().st_mtime_ns
    res = export("clear", "--to", str(out))
    assert res.exit_code == 2 and res.output.startswith("error:")
    assert "--force" in res.output and len(res.output.strip().splitlines()) == 1
    assert (out / "train.parquet").stat().st_mtime_ns == before
    # --force writes the latest version over it
    res = export("clear", "--to", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert max(len(x) for x in pq.read_table(out / "train.parquet")
               .column("input_ids").to_pylist()) == 32
    assert "| seq_len | 32 " in (out / "README.md").read_text()
    for bad, says in (("clear@x", "DATASET@VERSION"), ("nope", "No shards for dataset 'nope'"),
                      ("clear@99", "no version 99")):
        res = export(bad, "--to", str(tmp_path / "other"))
        assert res.exit_code == 2 and res.output.startswith("error:") and says in res.output
    assert "Example: corpus shards export" in export("--help").output
