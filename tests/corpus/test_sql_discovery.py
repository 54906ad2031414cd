"""`corpus sql` discovering the catalog as a user types it: SHOW TABLES, the shell's .tables,
a misspelt table."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime

from catalog import Lineage


def run(env, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "corpus.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_show_tables_shell_tables_and_a_misspelt_table(lakehouse, root_env):
    lakehouse.append("scores", {"book_id": ["b"], "metric": ["m"], "value": [1.0],
                                "scored_at": [datetime(2026, 11, 22, tzinfo=UTC)],
                                "source_file": ["s.csv"], "source_row": [1]},
                     lineage=Lineage(operation="test"))
    p = run(root_env, "sql", "SHOW TABLES", "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert list(csv.reader(io.StringIO(p.stdout))) == [
        ["name"], ["corpus_commits"], ["current_scores"], ["scores"]]

    p = run(root_env, "sql", stdin=".tables\n.quit\n")
    assert p.returncode == 0, p.stderr
    listed = [w for w in p.stdout.split() if w != "sql>"]  # the prompt goes to stdout too
    assert listed == ["scores@1", "current_scores", "corpus_commits"]

    p = run(root_env, "sql", "SELECT * FROM scors")
    assert p.returncode == 2 and p.stderr.startswith("error:") and "Traceback" not in p.stderr
    assert 'Did you mean "scores"?' in p.stderr and "duckdb_columns" not in p.stderr
