"""Lakehouse config: root resolution, S3 options from the standard AWS variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog import ConfigError, LakehouseConfig


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert LakehouseConfig.resolve(env={}).root == str(tmp_path / "lakehouse")
    assert LakehouseConfig.resolve(env={"CORPUS_ROOT": "x"}).root == str(tmp_path / "x")
    assert LakehouseConfig.resolve("y", env={"CORPUS_ROOT": "x"}).root == str(tmp_path / "y")
    assert LakehouseConfig.resolve("~/z", env={}).root == str(Path("~/z").expanduser())
    assert LakehouseConfig(root=f"file://{tmp_path}/w").root == str(tmp_path / "w")


def test_s3_root_takes_options_from_aws_env():
    cfg = LakehouseConfig.resolve("s3://bucket/some/prefix/", env={
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert cfg.is_s3 and (cfg.bucket, cfg.prefix) == ("bucket", "some/prefix")
    assert cfg.root == "s3://bucket/some/prefix"
    assert cfg.storage_options["AWS_REGION"] == "eu-west-1"
    assert cfg.storage_options["AWS_ALLOW_HTTP"] == "true"
    assert "s" not in cfg.describe().values()  # no secrets in lineage


@pytest.mark.parametrize("root, message", [
    ("", "root is empty"),
    ("s3://", "has no bucket"),
    ("gs://bucket/x", "unsupported scheme 'gs'"),
])
def test_bad_roots_are_explained(root, message):
    with pytest.raises(ConfigError, match=message):
        LakehouseConfig(root=root)


def test_config_is_frozen(tmp_path):
    cfg = LakehouseConfig(root=str(tmp_path))
    with pytest.raises(AttributeError):
        cfg.root = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.storage_options["x"] = "y"  # type: ignore[index]


def test_config_pickles_and_hashes(tmp_path):
    import pickle

    cfg = LakehouseConfig.resolve("s3://b/p", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and hash(again) == hash(cfg)
    assert again.storage_options["AWS_ALLOW_HTTP"] == "true"
