"""Lakehouse configuration: where the tables and objects live and how to reach them.

The root is a local folder (``./lakehouse`` by default, ``--root`` or ``CORPUS_ROOT``) or
``s3://bucket/prefix``. For S3 the standard AWS environment variables apply
(``AWS_ENDPOINT_URL``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

from catalog.errors import ConfigError

DEFAULT_ROOT = "./lakehouse"
ROOT_ENV = "CORPUS_ROOT"

# Environment variables read for S3, mapped to the option names deltalake (object_store) uses.
_S3_ENV = {
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
    "AWS_REGION": "AWS_REGION",
}
# Bounded retries and timeouts for deltalake's S3 client: an unreachable endpoint fails in
# seconds, not after object_store's default 10 retries over up to 3 minutes.
S3_CLIENT_DEFAULTS = {"connect_timeout": "5s", "max_retries": "4", "retry_timeout": "30s"}


@dataclass(frozen=True)
class LakehouseConfig:
    """Where the lakehouse lives.

    Attributes:
        root: A local folder path or ``s3://bucket[/prefix]``. Local paths are made absolute.
        storage_options: Options for S3 (endpoint, region, credentials); empty for local roots.
    """

    root: str
    storage_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        root = str(self.root).strip()
        if not root:
            raise ConfigError(
                "The lakehouse root is empty. Pass --root PATH_OR_S3_URI or set CORPUS_ROOT."
            )
        parsed = urlparse(root)
        if parsed.scheme in ("", "file"):
            local = parsed.path if parsed.scheme == "file" else root
            root = str(Path(local).expanduser().resolve())
        elif parsed.scheme == "s3":
            if not parsed.netloc:
                raise ConfigError(
                    f"The lakehouse root {root!r} has no bucket. Expected s3://BUCKET[/PREFIX]."
                )
            root = f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        else:
            raise ConfigError(
                f"The lakehouse root {root!r} uses the unsupported scheme {parsed.scheme!r}. "
                "Use a local folder path or s3://BUCKET[/PREFIX]."
            )
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "storage_options", MappingProxyType(dict(self.storage_options)))

    def __reduce__(self):
        # Worker processes receive the config; a mappingproxy does not pickle, a dict does.
        return (LakehouseConfig, (self.root, dict(self.storage_options)))

    def __hash__(self) -> int:
        # The options mapping is read-only but not hashable itself; hash its items.
        return hash((self.root, tuple(sorted(self.storage_options.items()))))

    @property
    def is_s3(self) -> bool:
        """True when the lakehouse lives in an S3 bucket."""
        return self.root.startswith("s3://")

    @property
    def bucket(self) -> str:
        """The S3 bucket (only for S3 roots)."""
        return urlparse(self.root).netloc

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without slashes at either end ('' for none)."""
        return urlparse(self.root).path.strip("/")

    @classmethod
    def resolve(
        cls, root: str | None = None, *, env: Mapping[str, str] | None = None
    ) -> LakehouseConfig:
        """Build the config from an explicit root, else ``CORPUS_ROOT``, else ``./lakehouse``.

        For S3 roots the storage options come from the standard AWS environment variables.
        """
        env = os.environ if env is None else env
        chosen = root or env.get(ROOT_ENV) or DEFAULT_ROOT
        if not str(chosen).startswith("s3://"):
            return cls(root=chosen)
        return cls(root=chosen, storage_options=s3_options_from_env(env))

    def describe(self) -> dict[str, str]:
        """The config as it may be recorded in lineage: never includes credentials."""
        out = {"root": self.root}
        if "AWS_ENDPOINT_URL" in self.storage_options:
            out["endpoint"] = self.storage_options["AWS_ENDPOINT_URL"]
        return out


def s3_options_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Collect deltalake/boto3 S3 options from the standard AWS environment variables."""
    opts = dict(S3_CLIENT_DEFAULTS)
    opts.update({opt: env[var] for var, opt in _S3_ENV.items() if env.get(var)})
    if "AWS_REGION" not in opts:
        opts["AWS_REGION"] = env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = opts.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        # object_store refuses plain HTTP unless told; a local test server speaks only HTTP.
        opts["AWS_ALLOW_HTTP"] = "true"
    return opts
