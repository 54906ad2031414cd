"""Reaching the S3 endpoint of a lakehouse: a quick check, and one line when it fails.

deltalake (object_store) reports an unreachable endpoint as a page of nested causes, including
its probes of the instance metadata service for credentials; a user needs one line that names
the endpoint and says what to check.
"""

from __future__ import annotations

import re
import socket
import urllib.request
from urllib.parse import urlparse

from catalog.config import LakehouseConfig
from catalog.errors import StorageError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CHECK = ("Check AWS_ENDPOINT_URL (is the server running and reachable from here?), AWS_REGION "
          "and the credentials AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.")
# How deltalake's S3 failures read (object_store's messages), as opposed to its other errors.
_S3_MARKS = ("S3 error", "error sending request", "169.254.169.254")


def endpoint_url(config: LakehouseConfig) -> str:
    """The S3 endpoint a lakehouse talks to: AWS_ENDPOINT_URL, else AWS's for its region."""
    opts = config.storage_options
    return opts.get("AWS_ENDPOINT_URL") or (
        f"https://s3.{opts.get('AWS_REGION', 'us-east-1')}.amazonaws.com")


def check_reachable(config: LakehouseConfig, *, timeout: float = 3.0) -> None:
    """Raise :class:`StorageError` within about ``timeout`` seconds when nothing listens at the
    endpoint's host and port (a TCP connect: no request, no credentials).

    Does nothing for local roots, or when a proxy from the environment would carry the
    requests (a direct connection proves nothing then).
    """
    if not config.is_s3:
        return
    url = urlparse(endpoint_url(config))
    if not url.hostname:
        raise StorageError(f"AWS_ENDPOINT_URL={endpoint_url(config)!r} is not a URL; expected "
                           "e.g. http://127.0.0.1:9000 or https://s3.example.com.")
    if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
            url.hostname):
        return
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname, port), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        cause = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise StorageError(f"Cannot reach the lakehouse {config.root}: the S3 endpoint "
                           f"{endpoint_url(config)} does not answer ({cause}). {_CHECK}") from None


def s3_failure(config: LakehouseConfig, error: BaseException) -> StorageError | None:
    """One line for an S3 failure that deltalake reports as a page; None when ``error`` is not
    an S3 failure."""
    text = _ANSI.sub("", str(error))
    if not config.is_s3 or not any(mark in text for mark in _S3_MARKS):
        return None
    # The causes are lines marked '↳', innermost last; a response body (HTML, XML) may follow.
    chain = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("↳"):
            cause = line.lstrip("↳").strip()
            if cause.startswith("<"):
                break
            chain.append(cause)
    if "169.254.169.254" in text:
        cause = ("no credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set and no "
                 "instance profile answered")
    else:
        cause = chain[-1][:200] if chain else text.splitlines()[0][:200]
    return StorageError(f"S3 request for the lakehouse {config.root} at {endpoint_url(config)} "
                        f"failed ({cause}). {_CHECK}")
