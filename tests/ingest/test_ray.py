"""`corpus ingest` and `corpus ocr` on a Ray cluster of two nodes on 127.0.0.1 write the
tables a local run writes (the executor itself: tests/catalog/test_executor.py)."""

from __future__ import annotations

import pytest

from catalog import Lakehouse
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from tests.helpers import VOLATILE, copy_lakehouse, lineage_config, table_rows

pytestmark = pytest.mark.slow
# blob URIs name the lakehouse they live in: each copy has its own root
DROP = VOLATILE | {"blob_uri"}


@pytest.fixture(scope="module")
def ingested_local(small_share, tmp_path_factory) -> Lakehouse:
    lh = Lakehouse(str(tmp_path_factory.mktemp("ray_ingest") / "local"))
    run_ingest(lh, small_share, workers=2)
    return lh


def test_ingest_on_ray_equals_local(ingested_local, small_share, ray_cluster, tmp_path):
    lh = Lakehouse(str(tmp_path / "ray"))
    r = run_ingest(lh, small_share, executor="ray", ray_address=ray_cluster.address)
    assert r.executor["kind"] == "ray" and r.executor["nodes"] == ray_cluster.nodes
    for name in ("files", "books", "texts", "scores", "scans"):
        assert table_rows(lh, name, drop=DROP) == table_rows(ingested_local, name, drop=DROP)
        assert lh.version(name) == ingested_local.version(name)
        ours, theirs = lineage_config(lh, name), lineage_config(ingested_local, name)
        assert ours == theirs
    # the corrupt files of the sample share are rows with their reasons, as locally
    held = [f for f in lh.read("files").to_pylist() if f["status"] == "quarantined"]
    assert held and all(f["reason"] for f in held)


def test_ocr_on_ray_equals_local_and_a_corrupt_scan_is_a_reason(ingested_local, ray_cluster,
                                                                tmp_path):
    local = copy_lakehouse(ingested_local, tmp_path / "local")
    ray = copy_lakehouse(ingested_local, tmp_path / "ray")
    # one scan's stored bytes damaged after ingest: its pages cannot be read
    scans = sorted(local.read("scans").to_pylist(), key=lambda s: s["scan_id"])
    files = {f["path"]: f for f in local.read("files").to_pylist()}
    bad = next(s for s in scans if s["source"].endswith(".pdf"))
    from catalog import key_from_uri

    for lh in (local, ray):
        lh.store.put_bytes(key_from_uri(files[bad["source"]]["blob_uri"]), b"%PDF-1.4 cut")
    a = run_ocr(local, config=OcrConfig(workers=1))
    b = run_ocr(ray, config=OcrConfig(executor="ray", workers=None,
                                      ray_address=ray_cluster.address))
    assert b.executor["kind"] == "ray" and b.executor["nodes"] == ray_cluster.nodes
    assert set(a.scans_failed) == set(b.scans_failed) == {bad["scan_id"]}
    assert a.pages_done == b.pages_done > 0
    drop = DROP | {"words"}  # word boxes hold floats Tesseract prints the same: compare text
    for name in ("ocr_pages", "scans", "texts"):
        assert table_rows(ray, name, drop=drop) == table_rows(local, name, drop=drop)
    # scans: the failure is a row with its reason, and counted in the commit's lineage
    row = next(s for s in ray.read("scans").to_pylist() if s["scan_id"] == bad["scan_id"])
    assert row["status"] == "failed" and row["reason"]
    commit = ray.history("scans", limit=1)[0]
    assert commit.config["failed"] == 1 and bad["scan_id"] in commit.config["failures"]
    assert commit.config["executor"]["kind"] == "ray"
    assert lineage_config(ray, "scans") == lineage_config(local, "scans")
