"""Every command, given bad options and values, says what is wrong in one `error:` line and
exits with status 2; no traceback, ever.

The cases are derived from the click group itself (every command and subcommand, every option's
type and range), so a new command or option is covered without touching this file. Most run
in-process with click's CliRunner; a few run the real `corpus` entry point in a subprocess.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from catalog import Lakehouse, LakehouseConfig, Lineage
from corpus.cli import cli
from corpus.commands.common import OutFile

CORPUS = str(Path(sys.executable).with_name("corpus"))


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


COMMANDS = list(_commands(cli))


def _bad_values(param: click.Parameter, tmp: Path) -> list[str]:
    """Values that ``param``'s type must refuse."""
    t = param.type
    if isinstance(t, click.IntRange | click.FloatRange):
        step = 1 if isinstance(t, click.IntRange) else 0.5
        out = ["abc"]
        if t.min is not None:
            out += [str(t.min - step)] + ([str(t.min)] if t.min_open else [])
        if t.max is not None:
            out += [str(t.max + step)] + ([str(t.max)] if t.max_open else [])
        return out
    if isinstance(t, click.Choice):
        return ["no-such-choice"]
    if t in (click.INT, click.FLOAT):
        return ["abc"]
    if isinstance(t, OutFile):
        return [str(tmp / "missing-folder" / "out.file"), str(tmp)]
    if isinstance(t, click.Path):
        return [str(tmp)] if not t.dir_okay else [str(tmp / "a-file")] if not t.file_okay else []
    return []


def _placeholder(param: click.Parameter, tmp: Path) -> str:
    """A value that passes ``param``'s own check (so that another error is the one reported)."""
    if isinstance(param.type, click.Path) and not param.type.file_okay:
        return str(tmp)
    if isinstance(param.type, click.Path):
        return str(tmp / "a-file")
    return "x"


def _cases(tmp: Path):
    """(command path, arguments, a word the one error line must hold) for every command."""
    for path, cmd in COMMANDS:
        yield path, ["--no-such-option"], "--no-such-option"
        args = [p for p in cmd.params if isinstance(p, click.Argument)]
        required = [p for p in cmd.params if isinstance(p, click.Option) and p.required]
        if any(a.required for a in args):
            yield path, [], "Missing argument"
        for a in args:
            for bad in _bad_values(a, tmp):
                yield path, [bad], a.human_readable_name
        if required:
            yield path, [_placeholder(a, tmp) for a in args if a.required], "Missing option"
        for opt in cmd.params:
            if not isinstance(opt, click.Option) or opt.is_flag:
                continue
            name = max(opt.opts, key=len)
            for bad in _bad_values(opt, tmp):
                # the bad option first: click checks parameters in the order they were given
                yield path, [name, bad, *(_placeholder(a, tmp) for a in args if a.required)], name
            if opt.nargs == 1 and not opt.multiple and not opt.count:
                yield path, [name], f"Option '{name}' requires an argument"


@pytest.fixture
def keep_logging():
    # `corpus` configures the root logger for its process; give pytest's back afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_every_command_has_cases():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"sql", "vacuum", "review", "ingest", "flags resolve", "shards build"} <= names
    assert len(names) >= 26


def test_bad_options_and_values_are_one_error_line(tmp_path, keep_logging):
    (tmp_path / "a-file").write_text("x")
    root = str(tmp_path / "lh")
    runner = CliRunner()
    cases = list(_cases(tmp_path))
    assert len(cases) > 200
    failures = []
    for path, args, expect in cases:
        res = runner.invoke(cli, ["--root", root, *path, *args])
        shown = f"corpus {' '.join(path)} {' '.join(args)}"
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            failures.append(f"{shown}: raised {res.exception!r}")
            continue
        if res.exit_code != 2 or "Traceback" in res.output:
            failures.append(f"{shown}: exit {res.exit_code}: {res.output!r}")
            continue
        try:
            line = _one_error_line(res.stderr)
        except AssertionError:
            failures.append(f"{shown}: stderr {res.stderr!r}")
            continue
        if expect.lower() not in line.lower() or "--help" not in line:
            failures.append(f"{shown}: {line!r} does not name {expect!r} and the help")
    assert not failures, "\n".join(failures)
    # nothing ran: no lakehouse was created by a refused command
    assert not (tmp_path / "lh").exists()


@pytest.mark.parametrize("args, expect", [
    (["vacuum", "scores", "--retention-hours", "-5"], "--retention-hours"),
    (["review", "--port", "99999"], "--port"),
    (["ingest", ".", "--workers", "-3"], "--workers"),
    (["ocr", "--workers", "0"], "--workers"),
    (["noise", "--workers", "-3"], "--workers"),
    (["mine", "--workers", "-3"], "--workers"),
    (["shards", "build", "--workers", "-3", "--name", "d", "--tokenizer", "t"], "--workers"),
    (["sql", "SELECT 1", "--out", "{tmp}/no/such/folder/r.csv"], "does not exist"),
    (["flag", "s1", "--by", "ann"], "Missing option '--as'"),
    (["import", "{tmp}"], "is a directory"),
])
def test_the_reported_cases(tmp_path, keep_logging, args, expect):
    res = CliRunner().invoke(cli, ["--root", str(tmp_path / "lh"),
                                   *[a.format(tmp=tmp_path) for a in args]])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert expect in _one_error_line(res.stderr)


# ---- the real entry point ----------------------------------------------------------------------

def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([CORPUS, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CORPUS_"))}
    env["CORPUS_ROOT"] = str(tmp_path / "lh")
    return env


@pytest.mark.parametrize("args, expect", [
    (["flag", "s1"], "Missing option '--as'. Choose from: rescan, wrong_book, needs_edit, ok"),
    (["import", "."], "is a directory"),
    (["sql", "--max-rows", "many", "SELECT 1"], "'many' is not a valid integer"),
    (["no-such-command"], "No such command"),
    (["--root", "gs://b/x", "tables"], "unsupported scheme"),
])
def test_entry_point_errors_are_one_line(env, args, expect):
    p = _run(args, env)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert expect in _one_error_line(p.stderr)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


@pytest.mark.parametrize("creds", [True, False], ids=["with-keys", "no-keys"])
@pytest.mark.parametrize("args", [["tables"], ["sql", "SELECT * FROM books"], ["init"],
                                  ["history", "books"]])
def test_unreachable_s3_endpoint_is_one_line_and_fast(env, args, creds):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env.update(AWS_ENDPOINT_URL=endpoint, CORPUS_ROOT="s3://bucket/lake")
    if creds:
        env.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    start = time.monotonic()
    p = _run(args, env)
    assert time.monotonic() - start < 20
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr + p.stdout and "WARN" not in p.stderr
    line = _one_error_line(p.stderr)
    assert endpoint in line and "AWS_ENDPOINT_URL" in line and "s3://bucket/lake" in line


def test_piped_output_lists_as_json_and_whole_values(tmp_path, env):
    lh = Lakehouse(LakehouseConfig(root=env["CORPUS_ROOT"]))
    title = "A title long enough to be folded at eighty columns by a terminal table " * 2
    lh.append("books", {"book_id": ["b0"], "title": [title.strip()],
                        "sources": [["share/a.docx", "share/b.docx"]]},
              lineage=Lineage(operation="test"))
    p = _run(["sql", "SELECT book_id, sources FROM books", "--format", "csv"], env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["book_id,sources",
                                     '"b0","[""share/a.docx"", ""share/b.docx""]"']
    # stdout is a pipe here, as with `| less` or `> file`: no value is cut at 80 columns
    p = _run(["sql", "SELECT book_id, title, sources FROM books"], env)
    assert p.returncode == 0, p.stderr
    assert title.strip() in p.stdout
    p = _run(["sql", "SELECT 1", "--format", "csv", "--out", str(tmp_path / "no" / "r.csv")],
             env)
    assert p.returncode == 2 and "does not exist" in _one_error_line(p.stderr)
