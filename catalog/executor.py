"""One executor interface for every stage: map a pure function over batches of work items,
in a local process pool or on a Ray cluster.

A stage's core is a module-level function ``fn(state, batch) -> results`` (one result per
item of the batch, in order). ``state`` is the stage's heavy state (a noise model, a
tokenizer, a loaded scoring model), made once per worker by ``setup(*setup_args)``: a pool
initializer here, a Ray actor's constructor on a cluster. The stage hands batches to
:meth:`Executor.map` and gets one result per item back, in input order (or as they finish);
the executor never knows what the items are.

What every backend guarantees:

* **A bad item costs only its own row.** When ``fn`` raises on a batch, the batch's items
  are run again one at a time; an item that still raises comes back as :class:`Failed` with
  its reason, and the job goes on. Errors of the storage itself (:class:`StorageError`)
  stop the job instead: they are not the document's fault.
* **Bounded concurrency and backpressure.** A window of batches is in flight (two per pool
  worker, :data:`RAY_IN_FLIGHT` per Ray worker); the next batch is read from the stage's
  iterator only when one finishes, so a stage streaming a table never holds more than the
  window in memory and a cluster is never handed the whole job at once.
* **A dead worker.** On Ray a new actor takes its place and gets its batches again (up to
  :data:`RAY_RETRIES` deaths a map); the stage's functions are pure, so a retry gives the
  same rows. A local pool cannot lose a worker and carry on: the job stops with one
  :class:`WorkerLostError`, and the driver commits nothing of the map in flight.
* **Progress.** A bar with rate and ETA on stderr when it is a terminal, one summary line
  per map when it is not (:func:`catalog.log.progress`).

``local`` (the default) is the bounded process pool of :mod:`catalog.workers` (one worker
runs in this process, without a pool). ``ray`` connects to the cluster at ``address`` (or
``CORPUS_RAY_ADDRESS``), or starts a Ray instance on this machine bound to 127.0.0.1. Ray
workers must run the same Corpus code as the driver (a mismatch is logged); they reach the
lakehouse themselves (the same root, S3 credentials in the config they are handed), and the
driver stays the only committer.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from catalog.errors import CommitConflictError, ConfigError, CorpusError, StorageError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_ADDRESS_ENV = "CORPUS_RAY_ADDRESS"
RAY_RETRIES = 3          # Ray workers that may die in one map (each replaced, its work redone)
# batches in flight per Ray worker: one running, the next ones already on the worker, so
# that the round trip to the driver never leaves it idle
RAY_IN_FLIGHT = 4
REASON_CHARS = 500       # a failure's reason is cut here (a row, not a log)
# Errors of the infrastructure, not of an item: they stop the job instead of becoming rows.
FATAL = (StorageError, CommitConflictError, MemoryError)


@dataclass(frozen=True)
class Failed:
    """An item the stage's function could not process: its key and why."""

    key: str
    reason: str


class WorkerLostError(CorpusError):
    """A worker process died (killed, out of memory) and the job could not go on."""


def check_executor(kind: str) -> str:
    """``kind`` when it names an executor (``local`` or ``ray``).

    Raises:
        ConfigError: any other name.
    """
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor must be local or ray, got {kind!r}.")
    return kind


def batched(items: Iterable[Any], *, size: int = 1, weight: Callable[[Any], int] | None = None,
            limit: int | None = None) -> Iterator[list]:
    """Consecutive items in batches of ``size`` items, or (with ``weight``) of about ``limit``
    weight (e.g. characters): a batch ends when it reaches either."""
    batch: list = []
    total = 0
    for item in items:
        batch.append(item)
        if weight is not None:
            total += weight(item)
        if len(batch) >= size or (limit is not None and total >= limit):
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def _reason(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def run_batch(fn: Callable[[Any, list], Sequence[Any]], state: Any, batch: list) -> list:
    """``fn(state, batch)``, one result per item; on an error the items one at a time, an item
    that still fails as :class:`Failed` (its key filled in by the driver)."""
    try:
        out = list(fn(state, batch))
    except FATAL:
        raise
    except Exception as e:
        if len(batch) == 1:
            return [Failed("", _reason(e))]
        log.debug("a batch of %d failed (%s); its items one at a time", len(batch), e)
    else:
        if len(out) != len(batch):
            raise RuntimeError(f"{getattr(fn, '__name__', fn)} returned {len(out)} results "
                               f"for {len(batch)} items")
        return out
    results = []
    for item in batch:
        try:
            results.extend(fn(state, [item]))
        except FATAL:
            raise
        except Exception as e:
            results.append(Failed("", _reason(e)))
    return results


@dataclass
class MapStats:
    """What the last :meth:`Executor.map` did: items, failures, the nodes that ran work."""

    items: int = 0
    failed: int = 0
    nodes: dict[str, int] = field(default_factory=dict)  # node id -> items
    seconds: float = 0.0


class Executor:
    """Maps a stage's function over batches of items (see the module docstring)."""

    kind = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}.")
        self._workers = workers
        self.stats = MapStats()

    @property
    def workers(self) -> int:
        """Workers the next map runs on."""
        from catalog.workers import default_workers

        return default_workers(self._workers)

    def describe(self) -> dict[str, Any]:
        """What lineage records of the executor (the only part of lineage that may differ
        between two runs of the same stage on the same inputs)."""
        return {"kind": self.kind, "workers": self.workers}

    def summary(self) -> dict[str, Any]:
        """:meth:`describe` with what the last map did: the nodes that ran work (a count),
        items and failures; what a stage's report shows."""
        return {**self.describe(), "nodes": len(self.stats.nodes), "items": self.stats.items,
                "failed": self.stats.failed}

    def where(self) -> str:
        """Where the last map ran and what failed, for a summary line:
        ``[ray, 2 worker(s), 2 node(s)]; 1 failed``."""
        s = self.stats
        nodes = f", {len(s.nodes)} node(s)" if self.kind == "ray" else ""
        failed = f"; {s.failed} failed" if s.failed else ""
        return f"[{self.kind}, {self.workers} worker(s){nodes}]{failed}"

    def starts_processes(self, n_batches: int, *, inline_below: int = 0) -> bool:
        """Whether a map of ``n_batches`` batches would start processes from this one. A
        driver joins its own threads first: a process forked while another thread runs can
        inherit a held lock and hang."""
        return True

    def map(self, fn: Callable[[Any, list], Sequence[Any]], batches: Iterable[list], *,
            setup: Callable[..., Any] | None = None, setup_args: tuple = (),
            desc: str, unit: str = "item", total: int | None = None,
            key: Callable[[Any], str] = str, ordered: bool = True,
            inline_below: int = 0, summary: bool = True) -> Iterator[Any]:
        """One result per item of ``batches``: ``fn``'s, or :class:`Failed`.

        Args:
            fn: A module-level function ``fn(state, batch) -> results``.
            batches: Lists of items, read lazily (at most the window ahead).
            setup: Makes a worker's state once, ``setup(*setup_args)`` (None: no state).
            setup_args: Picklable arguments of ``setup``.
            desc: What the progress bar and the summary line call the work.
            unit: What an item is (``book``, ``page``), for the bar.
            total: Items in all, when known (the bar's ETA).
            key: Names an item in a :class:`Failed` (runs in this process).
            ordered: Results in input order (else as they finish).
            inline_below: With fewer batches than this (when ``batches`` has a length), a
                local executor runs them in this process: a pool costs more to start.
            summary: The summary line when stderr is not a terminal (False: the caller
                prints its own, with :meth:`where`).
        """
        from catalog.log import progress

        self.stats = MapStats()
        t0 = time.perf_counter()

        def note() -> str:
            return f" {self.where()}"

        def results() -> Iterator[Any]:
            for batch, outs, node in self._map(fn, batches, setup, setup_args, ordered,
                                               inline_below):
                self.stats.nodes[node] = self.stats.nodes.get(node, 0) + len(batch)
                for item, out in zip(batch, outs, strict=True):
                    self.stats.items += 1
                    if isinstance(out, Failed):
                        self.stats.failed += 1
                        out = Failed(key(item), out.reason)
                    yield out
            self.stats.seconds = time.perf_counter() - t0

        yield from progress(results(), desc=desc, total=total, unit=unit, summary=summary,
                            note=note)

    def _map(self, fn, batches, setup, setup_args, ordered, inline_below
             ) -> Iterator[tuple[list, list, str]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (Ray actors); the executor can map again."""


# ---- local: this process, or a bounded process pool ---------------------------------------

_STATE: dict[str, Any] = {}
LOCAL_NODE = "local"


def in_worker() -> bool:
    """Whether this process is a worker of an executor (a pool process, a Ray actor), not
    the driver: a setup may then keep to one core (the executor runs one worker per core)."""
    return bool(_STATE.get("worker"))


def _pool_init(setup: Callable[..., Any] | None, setup_args: tuple) -> None:
    # forked from the driver: no inherited S3 connections
    from catalog.storage import cached_store

    cached_store.cache_clear()
    _STATE["worker"] = True
    try:
        _STATE["state"] = setup(*setup_args) if setup is not None else None
    except Exception as e:  # raised by every task instead: a dead pool would hide it
        _STATE["error"] = e


def _pool_run(fn: Callable, batch: list) -> list:
    if "error" in _STATE:
        raise _STATE["error"]  # the stage's setup failed: the same on every worker
    return run_batch(fn, _STATE["state"], batch)


class LocalExecutor(Executor):
    """Batches in this process (one worker) or in a pool of ``workers`` processes that die
    with this one (:func:`catalog.workers.process_pool`)."""

    kind = "local"

    def starts_processes(self, n_batches: int, *, inline_below: int = 0) -> bool:
        return self.workers > 1 and n_batches >= max(inline_below, 2)

    def _map(self, fn, batches, setup, setup_args, ordered, inline_below):
        workers = self.workers
        if not self.starts_processes(len(batches) if isinstance(batches, Sequence) else 2,
                                     inline_below=inline_below):
            state = setup(*setup_args) if setup is not None else None
            for batch in batches:
                yield batch, run_batch(fn, state, batch), LOCAL_NODE
            return
        from concurrent.futures.process import BrokenProcessPool

        from catalog.workers import process_pool

        window = 2 * workers
        source = iter(batches)
        try:
            with process_pool(workers, initializer=_pool_init,
                              initargs=(setup, setup_args)) as pool:
                if ordered:
                    pending: deque[tuple[list, Future]] = deque()
                    for batch in source:
                        pending.append((batch, pool.submit(_pool_run, fn, batch)))
                        if len(pending) >= window:
                            b, f = pending.popleft()
                            yield b, f.result(), LOCAL_NODE
                    while pending:
                        b, f = pending.popleft()
                        yield b, f.result(), LOCAL_NODE
                    return
                running: dict[Future, list] = {}
                exhausted = False
                while running or not exhausted:
                    while not exhausted and len(running) < window:
                        batch = next(source, None)
                        if batch is None:
                            exhausted = True
                        else:
                            running[pool.submit(_pool_run, fn, batch)] = batch
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in finished:
                        yield running.pop(f), f.result(), LOCAL_NODE
        except BrokenProcessPool:
            raise WorkerLostError(
                f"A worker process died while running {getattr(fn, '__name__', 'the job')} "
                "(killed, or out of memory). The job stopped; run the command again "
                "(what is not committed is redone).") from None


# ---- ray: actors spread over a cluster -----------------------------------------------------

class _RayWorker:
    """One Ray actor: the stage's state made once, then batch after batch."""

    def __init__(self, setup: Callable[..., Any] | None, setup_args: tuple) -> None:
        import ray

        from catalog.version import code_version

        _STATE["worker"] = True
        self.node = ray.get_runtime_context().get_node_id()
        self.code = code_version()
        self.error: BaseException | None = None
        try:
            self.state = setup(*setup_args) if setup is not None else None
        except Exception as e:  # a bad setup fails the same way on every restart
            self.state, self.error = None, e

    def hello(self) -> tuple[str, str, int]:
        """Node id, code version and process id of this worker."""
        return self.node, self.code, os.getpid()

    def run(self, fn: Callable, batch: list) -> tuple[str, list | BaseException]:
        if self.error is not None:
            return self.node, self.error
        try:
            return self.node, run_batch(fn, self.state, batch)
        except FATAL as e:  # raised again in the driver as it is, without Ray's wrapping
            return self.node, e


def ray_init(address: str | None = None) -> None:
    """Connect this process to Ray once: the cluster at ``address`` (or
    ``CORPUS_RAY_ADDRESS``), else a Ray instance started here that binds and talks on
    127.0.0.1 only."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'corpus[cluster]' "
                          "(ray[default]).") from None
    if ray.is_initialized():
        return
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    # the CLI's logging stays as it is; the workers' output stays in Ray's logs
    common = {"log_to_driver": False, "configure_logging": False}
    try:
        if address:
            _check_reachable(address)
            ray.init(address=address, **common)
        else:
            # "local": a new instance even when RAY_ADDRESS or /tmp/ray/ray_current_cluster
            # names a cluster another process started (ray.init() would attach to it)
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     **common)
    except ConnectionError as e:
        raise ConfigError(f"Cannot reach the Ray cluster at {address}: {e}. Check "
                          f"--ray-address (or {RAY_ADDRESS_ENV}).") from None


RAY_CONNECT_SECONDS = 5.0


def _check_reachable(address: str) -> None:
    """One quick TCP connection to ``HOST:PORT`` (or ``ray://HOST:PORT``): Ray itself waits
    minutes for a cluster that does not answer, this says so in seconds."""
    import socket

    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address must look like HOST:PORT or ray://HOST:PORT, got "
                          f"{address!r}.")
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS):
            pass
    except OSError as e:
        raise ConfigError(f"Cannot reach the Ray cluster at {address} ({e.strerror or e}). "
                          f"Check --ray-address (or {RAY_ADDRESS_ENV}) and that the cluster "
                          "runs.") from None


class RayExecutor(Executor):
    """Batches on Ray actors (one CPU each, spread over the nodes), at most ``window`` in
    flight; results stream back to this process."""

    kind = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        super().__init__(workers)
        self.address = address or os.environ.get(RAY_ADDRESS_ENV) or None
        self.actors: list[Any] = []
        self.pids: list[int] = []
        self._args: Any = None

    @property
    def workers(self) -> int:
        if self._workers is not None:
            return self._workers
        import ray

        ray_init(self.address)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": self.workers}

    def _start(self, setup, setup_args) -> None:
        import ray

        from catalog.version import code_version

        ray_init(self.address)
        # Restarts are ours (_replace), not Ray's: Ray restarts an actor whose constructor
        # arguments live in the object store only with a warning on every run.
        self._actor = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
        self._setup = setup
        # once in the object store, not once per actor; held while the actors live (a
        # replaced actor is built from it again)
        self._args = ray.put(setup_args)
        self.actors = [self._new_actor() for _ in range(self.workers)]
        hello = ray.get([a.hello.remote() for a in self.actors])
        self.pids = [pid for _, _, pid in hello]
        mine = code_version()
        other = sorted({code for _, code, _ in hello if code != mine})
        if other:
            log.warning("Ray workers run Corpus %s, this driver %s: install the same version "
                        "on the cluster (lineage records the driver's)", ", ".join(other), mine)

    def _new_actor(self):
        return self._actor.options(scheduling_strategy="SPREAD").remote(self._setup,
                                                                         self._args)

    def _map(self, fn, batches, setup, setup_args, ordered, inline_below):
        import ray
        from ray.exceptions import RayActorError

        self._start(setup, setup_args)
        name = getattr(fn, "__name__", "the job")
        deaths = 0
        try:
            window = RAY_IN_FLIGHT * len(self.actors)
            load = dict.fromkeys(range(len(self.actors)), 0)
            # ref -> (seq, actor index, the actor it was sent to, batch)
            pending: dict[Any, tuple[int, int, Any, list]] = {}
            done: dict[int, tuple[list, list, str]] = {}
            source = iter(batches)
            exhausted, seq, next_out = False, 0, 0

            def send(s: int, a: int, batch: list) -> None:
                load[a] += 1
                pending[self.actors[a].run.remote(fn, batch)] = (s, a, self.actors[a], batch)

            while pending or not exhausted or done:
                while not exhausted and len(pending) + len(done) < window:
                    batch = next(source, None)
                    if batch is None:
                        exhausted = True
                        break
                    send(seq, min(load, key=load.__getitem__), batch)
                    seq += 1
                if pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        s, a, actor, batch = pending.pop(ref)
                        load[a] -= 1
                        try:
                            node, outs = ray.get(ref)
                        except RayActorError as e:
                            # the worker died (killed, out of memory, its node lost): a new
                            # one takes its place and the batch again (the work is pure)
                            if actor is self.actors[a]:
                                deaths += 1
                                if deaths > RAY_RETRIES:
                                    raise WorkerLostError(
                                        f"Ray workers died {deaths} times while running {name}"
                                        f" ({e.__class__.__name__}). The job stopped; run the "
                                        "command again (what is not committed is redone)."
                                    ) from None
                                log.warning("a Ray worker died running %s (%s): replaced, its "
                                            "batches sent again", name, e.__class__.__name__)
                                self.actors[a] = self._new_actor()
                                self.pids[a] = -1
                            send(s, a, batch)
                            continue
                        if isinstance(outs, BaseException):
                            # the stage's setup failed (the same on every worker), or the
                            # storage did
                            raise outs
                        if not ordered:
                            yield batch, outs, node
                        else:
                            done[s] = (batch, outs, node)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                if exhausted and not pending and not done:
                    break
        finally:
            self.close()

    def close(self) -> None:
        if not self.actors:
            return
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        self._args = None


def make_executor(kind: str = "local", *, workers: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor named ``kind``: ``local`` (``workers`` processes, default one per core)
    or ``ray`` (``workers`` actors, default one per CPU of the cluster at ``address``)."""
    check_executor(kind)
    if kind == "ray":
        return RayExecutor(workers, address)
    return LocalExecutor(workers)
