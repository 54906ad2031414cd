"""Kill tests' helpers: start a command in its own session, SIGKILL it once its workers
run, and check that none of its children outlives it. Reads /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def children(pid: int) -> dict[int, int]:
    """Live children of ``pid``: ``{child pid: start time}`` (start time guards reuse)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st and st[0] == pid and st[1] not in "ZX":
                out[int(d.name)] = st[2]
    return out


def survivors(procs: dict[int, int]) -> list[str]:
    """Which of ``procs`` still run (zombies count as gone), as ``pid cmdline`` lines."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st and st[2] == start and st[1] not in "ZX":
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmd = "?"
            out.append(f"{pid} {cmd.strip()}")
    return out


@dataclass(frozen=True)
class Killed:
    """A process killed by :func:`kill_when` (also its session id) and its children then."""

    pid: int
    children: dict[int, int]


def kill_when(cmd: list[str], env: dict[str, str], *, ready: Callable[[], bool] = lambda: True,
              min_children: int = 2, timeout: float = 300, log: Path | None = None
              ) -> Killed:
    """Run ``cmd`` in a new session; once ``ready()`` holds and it has ``min_children``
    children (its workers), SIGKILL it. Returns the children it had just before the kill.

    Call :func:`assert_no_orphans` with the result.
    """
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            kids = children(proc.pid)
            if len(kids) >= min_children and ready():
                break
            if proc.poll() is not None:
                raise AssertionError(f"{cmd} ended (exit {proc.returncode}) before its "
                                     f"workers were seen; log: {log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd} never had {min_children} workers busy")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    except BaseException:
        _kill_session(proc.pid)
        raise
    finally:
        if log:
            out.close()
    return Killed(proc.pid, kids)


def assert_no_orphans(killed: Killed, grace: float = 10.0) -> None:
    """Every child of the killed process exits within ``grace`` seconds (then the rest of
    its session is killed, so a failing test leaves nothing behind)."""
    assert killed.children, "the process had no children when it was killed"
    deadline = time.monotonic() + grace
    while (left := survivors(killed.children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_session(killed.pid)
    assert not left, f"worker(s) outlived their killed parent: {left}"


def _kill_session(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
