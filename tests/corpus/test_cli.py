"""The `corpus` command line as a user runs it: a real subprocess, local and S3 roots."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from catalog import Lineage

CORPUS = [sys.executable, "-m", "corpus.cli"]


def run(env, *args, stdin=None, ok=True):
    p = subprocess.run([*CORPUS, *args], env=env, capture_output=True, text=True, input=stdin,
                       timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def _seed(lh):
    lh.append("flags", {"flag_id": ["f1", "f2"], "scan_id": ["s1", "s2"], "flag": ["ok", "rescan"],
                        "editor": ["ann", "bob"],
                        "created_at": ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"]},
              lineage=Lineage(operation="seed", sources=["/share/flags.csv"]))
    lh.append("alignments", {"book_id": ["b"], "raw_variant": ["ocr"], "cer": [0.04]},
              lineage=Lineage(operation="mine", inputs=lh.pin("flags")))


def test_tables_history_lineage(lakehouse, root_env):
    _seed(lakehouse)
    t = json.loads(run(root_env, "tables", "--format", "json").stdout)
    by = {r["name"]: r for r in t}
    assert set(by) == {"flags", "alignments"}
    assert (by["flags"]["version"], by["flags"]["rows"], by["flags"]["files"]) == (1, 2, 1)
    assert by["flags"]["bytes"] > 0
    assert "flags" in run(root_env, "tables").stdout
    h = json.loads(run(root_env, "history", "alignments", "--format", "json").stdout)
    assert [c["operation"] for c in h] == ["mine", "create"]
    assert h[0]["inputs"] == {"flags": 1}
    assert "mine" in run(root_env, "history", "alignments").stdout
    lin = json.loads(run(root_env, "lineage", "alignments@1", "--format", "json").stdout)
    assert lin["inputs"][0]["table"] == "flags" and lin["inputs"][0]["version"] == 1
    assert lin["inputs"][0]["sources"] == ["/share/flags.csv"]
    tree = run(root_env, "lineage", "alignments").stdout
    assert "alignments@1" in tree and "flags@1" in tree and "/share/flags.csv" in tree


def test_sql_formats(lakehouse, root_env, tmp_path):
    _seed(lakehouse)
    q = "SELECT flag_id, editor FROM flags ORDER BY flag_id"
    out = run(root_env, "sql", q, "--format", "csv").stdout
    assert list(csv.reader(io.StringIO(out))) == [["flag_id", "editor"], ["f1", "ann"],
                                                  ["f2", "bob"]]
    assert json.loads(run(root_env, "sql", q, "--format", "json").stdout) == [
        {"flag_id": "f1", "editor": "ann"}, {"flag_id": "f2", "editor": "bob"}]
    table = run(root_env, "sql", q).stdout
    assert "f1" in table and "2 rows" in table
    pq_out = tmp_path / "r.parquet"
    run(root_env, "sql", q, "--format", "parquet", "--out", str(pq_out))
    assert pq.read_table(pq_out).column("editor").to_pylist() == ["ann", "bob"]
    pinned = run(root_env, "sql", "SELECT count(*) AS n FROM flags", "--as-of", "flags=0",
                 "--format", "csv").stdout
    assert pinned.splitlines() == ["n", "0"]
    assert run(root_env, "sql", "-", "--format", "csv", stdin="SELECT 1 AS one").stdout \
        .splitlines() == ["one", "1"]


@pytest.mark.parametrize("args, message", [
    (["sql", "SELECT * FROM nope"], "Catalog tables here"),
    (["sql", "SELEC 1"], "Bad SQL"),
    (["sql", "COPY flags TO '/tmp/x.csv'"], "read-only"),
    (["sql", "SELECT * FROM read_csv('/etc/passwd')"], "--allow-files"),
    (["sql", "SELECT 1", "--format", "parquet"], "--out"),
    (["sql", "SELECT 1", "--as-of", "flags"], "TABLE=VERSION"),
    (["history", "nope"], "Known tables"),
    (["lineage", "flags@99"], "versions are 0..1"),
    (["lineage", "texts"], "does not exist yet"),
    (["--root", "gs://b/x", "tables"], "unsupported scheme"),
])
def test_user_errors_are_one_clear_line_without_traceback(lakehouse, root_env, args, message):
    _seed(lakehouse)
    p = run(root_env, *args, ok=False)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert message in p.stderr and p.stderr.startswith("error:")


def test_shell_reads_statements_until_quit(lakehouse, root_env):
    _seed(lakehouse)
    p = run(root_env, "sql", stdin=".tables\nSELECT count(*)\n AS n FROM flags;\n"
                                   "SELECT * FROM nope;\n.quit\n")
    assert "flags@1" in p.stdout and "│ 2" in p.stdout
    assert "error:" in p.stderr  # a bad statement does not end the shell


def test_init_optimize_vacuum(lakehouse, root_env):
    _seed(lakehouse)
    assert "created 12 table(s)" in run(root_env, "init").stdout
    _seed(lakehouse)
    assert "2 files compacted into 1" in run(root_env, "optimize", "flags").stdout
    assert "would delete (pass --apply) 2" in run(
        root_env, "vacuum", "flags", "--retention-hours", "0").stdout


def test_new_spellings_and_their_old_aliases(tmp_path):
    """`corpus plan --limit N` is `corpus train --plan --books N`; `corpus noise evaluate`
    is `corpus noise --evaluate`: both spellings reach the same command."""
    from click.testing import CliRunner

    from corpus.cli import cli

    common = ["--backbone", "all-minilm-l6-v2", "--seq-len", "64", "--device", "cpu",
              "--tokens-per-book", "100", "--tokens-per-s", "1000", "--format", "json"]
    root = ["--root", str(tmp_path / "lh")]
    new = CliRunner().invoke(cli, [*root, "plan", "--limit", "7", *common], obj={})
    old = CliRunner().invoke(cli, [*root, "train", "--plan", "--books", "7", *common], obj={})
    assert new.exit_code == old.exit_code == 0, (new.output, old.output)
    assert json.loads(new.output) == json.loads(old.output)
    assert json.loads(new.output)["cost"]["tokens"] == 700
    # a count is not a --books of `corpus plan` any more
    bad = CliRunner().invoke(cli, [*root, "plan", "--books", "7", *common], obj={})
    assert bad.exit_code == 2 and "--books" in bad.output
    helps = [CliRunner().invoke(cli, [*root, *a, "--help"], obj={}).output
             for a in (["noise", "evaluate"], ["noise", "--evaluate"])]
    assert "--holdout" in helps[0] and helps[0] == helps[1]


def test_every_option_has_help_and_every_command_ends_with_an_example():
    import click
    from click.testing import CliRunner

    from corpus.cli import cli

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    seen = 0
    for path, cmd in walk(cli, []):
        bare = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
        assert not bare, f"corpus {' '.join(path)}: options without help {bare}"
        out = CliRunner().invoke(cli, [*path, "--help"], obj={}).output
        last = out.rstrip().split("\n\n")[-1]
        assert last.lstrip().startswith("Example: corpus"), (path, last)
        seen += 1
    assert seen >= 30
