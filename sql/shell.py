"""The interactive SQL shell of ``corpus sql`` (no query argument)."""

from __future__ import annotations

import contextlib
import sys

from catalog import CorpusError
from sql.output import write_result
from sql.session import COMMITS_VIEW, SqlSession

HELP = f"""Statements end with ';'. Commands: .tables  .help  .quit
Every catalog table is a view; {COMMITS_VIEW} holds every commit with its lineage;
current_scores holds the current score per book and metric, current_texts each book's best
text (edited, else corrected, else OCR). SHOW TABLES, DESCRIBE scores and
information_schema.columns (with each column's meaning in COLUMN_COMMENT) list them."""


def run_shell(session: SqlSession, *, fmt: str = "table") -> None:
    """Read statements from the terminal until EOF or ``.quit``; errors do not end the shell."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history when available)
    print(f"corpus sql on {session.lakehouse.root}. {HELP}", file=sys.stderr)
    buf: list[str] = []
    while True:
        try:
            line = input("... " if buf else "sql> ")
        except EOFError:
            print(file=sys.stderr)
            return
        except KeyboardInterrupt:
            buf.clear()
            print(file=sys.stderr)
            continue
        stripped = line.strip()
        if not buf and stripped.startswith("."):
            if stripped in (".quit", ".exit"):
                return
            if stripped == ".tables":  # with the version each is pinned to in this shell
                for name in session.tables:
                    session.register(name)
                    print(f"{name}@{session.versions[name]}")
                for view in session.views:
                    print(view)
            else:
                print(HELP)
            continue
        buf.append(line)
        if not stripped.endswith(";"):
            continue
        sql, buf = "\n".join(buf), []
        try:
            write_result(session.batches(sql), fmt=fmt)
        except CorpusError as e:
            print(f"error: {e}", file=sys.stderr)
