"""The bundled sample data (ingest/data/, CC BY-NC-SA 4.0: see ingest/data/README.md).

Two inputs the ingest stage knows how to read: 60 labelled CLEAR passages (a CSV for
:func:`ingest.passages.run_import` with :data:`SAMPLE_CONFIG`) and a small editorial share
(a tarball for :func:`ingest.driver.run_ingest` once unpacked). They live in the stage that
reads them, so the demo, the benchmarks and every stage's tests reach them without the
top floor.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from catalog.rules import CLEAR_ID_PREFIX
from ingest.passages import ImportConfig

# How the CLEAR columns map onto books, texts and scores.
SAMPLE_CONFIG = ImportConfig(
    id_col="ID", text_col="Excerpt", title_col="Title", author_col="Author",
    scores={"bt_easiness": "BT_easiness", "lexile": "Lexile Band"}, id_prefix=CLEAR_ID_PREFIX,
)


def sample_passages() -> Path:
    """Path of the bundled CLEAR sample (CC BY-NC-SA 4.0; see ingest/data/README.md)."""
    return Path(str(resources.files("ingest") / "data" / "sample_passages.csv"))


def sample_share_tarball() -> Path:
    """The bundled sample share (a tarball: it keeps the files' modification times)."""
    return Path(str(resources.files("ingest") / "data" / "sample_share.tar.gz"))
