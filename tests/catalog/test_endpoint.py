"""An S3 endpoint that does not answer, or answers nonsense, is one line naming it."""

from __future__ import annotations

import socket
import threading
import time
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest
from deltalake import DeltaTable

from catalog import LakehouseConfig, StorageError
from catalog.endpoint import check_reachable, s3_failure


def _config(endpoint: str, **env: str) -> LakehouseConfig:
    return LakehouseConfig.resolve("s3://bucket/lake", env={"AWS_ENDPOINT_URL": endpoint, **env})


@pytest.fixture
def not_s3(tmp_path):
    """A plain HTTP server on loopback: it answers, but not as S3 does (404 pages in HTML)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_nothing_listening_fails_fast_with_the_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://bucket/lake: the S3 endpoint http://127\.0\.0"
                                           r"\.1:\d+ does not answer \(Connection refused\)"):
        check_reachable(_config(endpoint))
    assert time.monotonic() - start < 5
    check_reachable(LakehouseConfig(root="/tmp/anywhere"))  # local roots: nothing to check


def test_deltalake_page_becomes_one_line(not_s3):
    config = _config(not_s3, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    check_reachable(config)  # something listens
    with pytest.raises(OSError) as info:
        DeltaTable("s3://bucket/lake/tables/books", storage_options=dict(config.storage_options))
    assert len(str(info.value).splitlines()) > 5  # the page deltalake gives
    err = s3_failure(config, info.value)
    assert err is not None and "\n" not in str(err)
    assert f"at {not_s3} failed (404 Not Found)" in str(err) and "AWS_ENDPOINT_URL" in str(err)
    assert s3_failure(config, ValueError("unrelated")) is None
    assert s3_failure(LakehouseConfig(root="/tmp/x"), info.value) is None
