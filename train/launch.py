"""Launch a training run under torchrun, restart it after crashes and hangs, record it.

:func:`run_training` writes the resolved config into the run folder, records the run in
``runs`` (status ``running``), then starts ``torchrun ... -m train.recipe RUN_DIR`` and watches
it. The restart loop is ours (torchrun runs with ``--max-restarts 0``) because between two
attempts the launcher must look at what was in flight:

* every rank writes ``inflight/rank-<r>.json`` before each step (its sample ids) and marks it
  ``done`` after; a rank stopped by a signal marks ``terminated`` and a rank that failed
  because a peer died marks ``peer_failure``. The samples of ranks still ``running`` (or that
  raised an error of their own) at a crash are the suspects; each crash counts once per
  suspect in ``crashes.json``, and a sample with two crashes goes into ``skip.json``, which
  the next attempt's loader honours (logged, and listed in the run's metrics).
* a rank whose record has not changed for ``hang_timeout`` seconds (``startup_timeout``
  before its first step) is hung: the whole job is stopped (SIGTERM, then SIGKILL) and
  treated as crashed.

Each attempt's per-rank stdout/stderr is captured by torchrun in
``RUN_DIR/logs/attempt-<k>/``. The next attempt resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catalog import Lakehouse
from catalog.errors import ConfigError, CorpusError
from catalog.lineage import Lineage
from train import checkpoint
from train.recipe import ATTEMPT_ENV, TrainConfig, read_metrics, require_tensorboard

log = logging.getLogger(__name__)

SUSPECT_STATES = ("running", "error")
CRASHES_TO_SKIP = 2


class TrainingFailed(CorpusError):
    """The job kept crashing after all restarts."""


@dataclass(frozen=True)
class LaunchConfig:
    """How to run the job.

    Attributes:
        nproc: Processes (ranks) per node.
        nnodes: Nodes; with more than one, ``rdzv`` names the rendezvous ``HOST:PORT``.
        rdzv: Rendezvous endpoint for multi-node jobs.
        node_rank: This node's rank (only node 0 records the run in ``runs``).
        max_restarts: Restarts after a crash or hang.
        hang_timeout: Seconds without progress after which a rank counts as hung.
        startup_timeout: Seconds a rank may take to reach its first step.
        poll_s: How often the watchdog looks.
    """

    nproc: int = 1
    nnodes: int = 1
    rdzv: str | None = None
    node_rank: int = 0
    max_restarts: int = 3
    hang_timeout: float = 300.0
    startup_timeout: float = 900.0
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1 or self.max_restarts < 0:
            raise ConfigError(f"nproc and nnodes must be >= 1 and max_restarts >= 0, found "
                              f"{self.nproc}, {self.nnodes}, {self.max_restarts}.")
        if self.nnodes > 1 and not self.rdzv:
            raise ConfigError("--nnodes > 1 needs --rdzv HOST:PORT (the rendezvous endpoint "
                              "every node can reach).")
        if self.hang_timeout <= 0 or self.startup_timeout <= 0:
            raise ConfigError("hang_timeout and startup_timeout must be > 0 seconds.")


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced."""

    run_id: str
    run_dir: Path
    status: str
    attempts: int
    metrics: dict[str, Any]
    checkpoint_uri: str | None
    skipped: list[str]


def torchrun_command(run_dir: Path, launch: LaunchConfig, attempt: int) -> list[str]:
    """The torchrun command line of one attempt (``python -m torch.distributed.run``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.nproc}",
           "--max-restarts=0", f"--log-dir={run_dir / 'logs' / f'attempt-{attempt}'}",
           "--redirects=3", "--tee=3"]
    if launch.nnodes == 1 and not launch.rdzv:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={launch.nnodes}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={launch.rdzv}", f"--rdzv-id={run_dir.name}",
                f"--node-rank={launch.node_rank}"]
    return [*cmd, "-m", "train.recipe", str(run_dir)]


def _records(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((run_dir / "inflight").glob("rank-*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        rec["mtime"] = p.stat().st_mtime
        out.append(rec)
    return out


def _hung(run_dir: Path, launch: LaunchConfig, started: float) -> str | None:
    """A description of a hung rank, or None. Ranks that finished are never hung."""
    now = time.time()
    recs = {r["rank"]: r for r in _records(run_dir)}
    for rank, rec in recs.items():
        if rec.get("state") in ("finished", "terminated", "error", "peer_failure"):
            continue
        limit = launch.startup_timeout if rec.get("state") == "setup" else launch.hang_timeout
        if now - rec["mtime"] > limit:
            return f"rank {rank} made no progress for {now - rec['mtime']:.0f} s " \
                   f"(state {rec.get('state')}, step {rec.get('step')})"
    if not recs and now - started > launch.startup_timeout:
        return f"no rank started within {launch.startup_timeout:.0f} s"
    return None


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop torchrun and its ranks (its own process group): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _suspects(run_dir: Path) -> list[str]:
    """Sample ids in flight on ranks that were the cause of a crash (not its victims).

    Ranks still computing (``running``) or failing on their own (``error``) are suspects;
    only if there are none, ranks that were waiting for their peers (``sync``) are.
    """
    recs = _records(run_dir)
    ids = [s for r in recs if r.get("state") in SUSPECT_STATES for s in r.get("sample_ids", [])]
    if not ids:
        ids = [s for r in recs if r.get("state") == "sync" for s in r.get("sample_ids", [])]
    return sorted(set(ids))


def record_crash(run_dir: Path, suspects: list[str]) -> list[str]:
    """Count a crash for each suspect; return the skip list (ids with two crashes or more)."""
    path = run_dir / "crashes.json"
    crashes: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    for s in suspects:
        crashes[s] = crashes.get(s, 0) + 1
    path.write_text(json.dumps(crashes, indent=1, sort_keys=True))
    skip = sorted(s for s, n in crashes.items() if n >= CRASHES_TO_SKIP)
    old = json.loads((run_dir / "skip.json").read_text()) if (run_dir / "skip.json").exists() \
        else []
    for s in sorted(set(skip) - set(old)):
        log.warning("sample %s crashed the job %d times: it goes on the skip list", s,
                    crashes[s])
    (run_dir / "skip.json").write_text(json.dumps(skip))
    return skip


def _env(attempt: int, base: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[ATTEMPT_ENV] = str(attempt)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch

        if torch.cuda.is_available():
            env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    except ImportError:
        pass
    # the recipe is imported by module name: make this checkout importable in every rank
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def run_attempts(run_dir: Path, launch: LaunchConfig, *,
                 env: dict[str, str] | None = None) -> tuple[bool, int]:
    """Run torchrun until it succeeds or restarts run out; returns (ok, attempts)."""
    for attempt in range(launch.max_restarts + 1):
        for p in (run_dir / "inflight").glob("rank-*.json"):
            p.unlink()
        cmd = torchrun_command(run_dir, launch, attempt)
        log.info("attempt %d: %s", attempt, " ".join(cmd))
        started = time.time()
        proc_env = _env(attempt, env)
        if launch.nproc > 1:  # what torchrun would set, without its banner on every run
            proc_env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen(cmd, env=proc_env, start_new_session=True)
        hung = None
        suspects: list[str] | None = None
        try:
            while proc.poll() is None:
                time.sleep(launch.poll_s)
                hung = _hung(run_dir, launch, started)
                if hung:
                    # before stopping: a stopped rank marks itself terminated
                    suspects = _suspects(run_dir)
                    log.warning("attempt %d: %s; stopping the job", attempt, hung)
                    _stop(proc)
                    break
        except BaseException:
            _stop(proc)
            raise
        rc = proc.wait()
        if rc == 0 and not hung:
            return True, attempt + 1
        if suspects is None:
            suspects = _suspects(run_dir)
        log.warning("attempt %d failed (%s); samples in flight on the failing rank(s): %s",
                    attempt, hung or f"exit status {rc}", suspects)
        record_crash(run_dir, suspects)
    return False, launch.max_restarts + 1


def _runs_row(run_id: str, cfg: TrainConfig, status: str, started: datetime,
              metrics: dict[str, Any] | None = None, checkpoint_uri: str | None = None,
              finished: datetime | None = None) -> dict[str, Any]:
    return {"run_id": run_id, "dataset": cfg.dataset, "shards_version": cfg.shards_version,
            "backbone": cfg.model["backbone"], "head": cfg.model["head"],
            "config": json.dumps(cfg.to_dict(), sort_keys=True),
            "metrics": json.dumps(metrics or {}, sort_keys=True, default=str),
            "checkpoint_uri": checkpoint_uri, "status": status, "started_at": started,
            "finished_at": finished}


def upload_model(lh: Lakehouse, run_id: str, folder: Path, name: str = "final") -> str:
    """Store a run's model folder under ``runs/<run_id>/<name>``; returns its URI."""
    for f in sorted(folder.iterdir()):
        lh.store.put_file(f"runs/{run_id}/{name}/{f.name}", f)
    return lh.store.uri(f"runs/{run_id}/{name}")


def check_backbone(lakehouse: Lakehouse, cfg: TrainConfig) -> None:
    """Refuse to train a backbone on shards tokenised for another one, or cut into windows
    longer than its positions (:func:`check_shards_backbone` on the run's pinned shards).

    Raises:
        ConfigError: see :func:`check_shards_backbone`.
    """
    from train.shards import read_manifest

    manifest, version = read_manifest(lakehouse, cfg.dataset, version=cfg.shards_version,
                                      split="train")
    check_shards_backbone(manifest, ref=f"{cfg.dataset}@{version}",
                          backbone=cfg.model["backbone"])


def check_shards_backbone(manifest: Any, *, ref: str, backbone: str) -> None:
    """Refuse a backbone for shards tokenised for another one, or cut into windows longer
    than its positions: the one rule for training and probing a backbone on shards.

    Args:
        manifest: The shards' manifest rows (``tokenizer``, ``seq_len``).
        ref: ``DATASET@VERSION`` of the shards, for messages.
        backbone: Backbone alias or folder.

    Raises:
        ConfigError: the shards' tokenizer and the backbone resolve to different models
            (token ids would mean nothing to the backbone), or the shards' seq-len is beyond
            the backbone's position limit (:func:`train.plan.check_seq_len`).
    """
    from train.backbones import same_backbone
    from train.plan import check_seq_len, load_arch

    shard_tok = str(manifest.column("tokenizer")[0].as_py())
    if not same_backbone(shard_tok, backbone):
        raise ConfigError(
            f"shards {ref} were tokenised with {shard_tok!r}, but the backbone is "
            f"{backbone!r}: token ids would mean nothing to it. Use --backbone {shard_tok}, "
            f"or build shards with --tokenizer {backbone}.")
    seq_len = int(manifest.column("seq_len")[0].as_py())
    check_seq_len(load_arch(backbone), seq_len, backbone=backbone,
                  fix=f"shards {ref} have windows that long: build them "
                      "again with a --seq-len within the limit")


def check_options(lakehouse: Lakehouse, cfg: TrainConfig) -> None:
    """Refuse options that cannot work before any rank starts.

    Raises:
        ConfigError: ``tensorboard`` without the tensorboard package, ``early_stop`` on
            shards without a validation split (nothing to stop on), or a ``layer`` the
            backbone does not have.
    """
    from train.shards import read_manifest

    if cfg.tensorboard:
        require_tensorboard()
    layer = cfg.model.get("layer")
    if layer:
        from train.plan import load_arch

        n = load_arch(cfg.model["backbone"]).n_layers
        if layer > n:
            raise ConfigError(f"--layer {layer}: {cfg.model['backbone']} has {n} layers; "
                              f"choose 1..{n} (`corpus probe` shows how well each does).")
    if cfg.early_stop:
        manifest, version = read_manifest(lakehouse, cfg.dataset, version=cfg.shards_version)
        if "validation" not in set(manifest.column("split").to_pylist()):
            raise ConfigError(f"--early-stop watches the validation split, but shards "
                              f"{cfg.dataset}@{version} have none: build them with "
                              "--val-frac > 0, or train without --early-stop.")


def summarise_metrics(run_dir: Path) -> dict[str, Any]:
    """The ``runs`` row's summary of ``metrics.jsonl``: first and last training loss, median
    tokens/s, peak RSS; the first and last validation book MAE."""
    steps, vals = read_metrics(run_dir)
    out: dict[str, Any] = {}
    if steps:
        out.update({"first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"],
                    "tokens_per_s": sorted(s["tokens_per_s"] for s in steps)[len(steps) // 2],
                    "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps)})
    if vals:
        out.update({"first_val_book_mae": vals[0]["val_book_mae"],
                    "last_val_book_mae": vals[-1]["val_book_mae"]})
    return out


def model_card(lakehouse: Lakehouse, run_id: str, cfg: TrainConfig,
               result: dict[str, Any]) -> Any:
    """The :class:`train.model.ModelCard` of a finished run: its model, the pinned shards
    (their settings, sizes and the texts/scores versions they were built from), training
    settings and the saved model's validation metrics."""
    from train.model import CONFIG_FILE, ModelCard
    from train.shards import read_manifest

    manifest, version = read_manifest(lakehouse, cfg.dataset, version=cfg.shards_version)
    rows = manifest.to_pylist()
    first = rows[0]
    splits: dict[str, dict[str, int]] = {}
    for r in rows:
        sp = splits.setdefault(r["split"], {"shards": 0, "samples": 0, "tokens": 0,
                                            "books": 0})
        sp["shards"] += 1
        sp["samples"] += r["n_samples"]
        sp["tokens"] += r["n_tokens"]
    for split in splits:
        splits[split]["books"] = len({b for r in rows if r["split"] == split
                                      for b in (r.get("book_ids") or [])})
    shards = {k: first.get(k) for k in ("tokenizer", "seq_len", "window", "stride",
                                        "texts_version", "scores_version", "build_id")}
    shards["variants"] = sorted({v for r in rows if r["split"] == "train"
                                 for v in (r.get("variants") or [])})
    training = {k: v for k, v in cfg.to_dict().items()
                if k not in ("root", "dataset", "shards_version", "model", "extra")}
    model = dict(cfg.model)
    saved = Path(result.get("checkpoint") or "") / CONFIG_FILE
    if result.get("checkpoint") and saved.is_file():  # what the ranks built (target scaling)
        model = json.loads(saved.read_text())
    return ModelCard(run_id=run_id, model=model, dataset=cfg.dataset,
                     shards_version=version, target=first.get("target"),
                     shards={**shards, "splits": splits}, training=training,
                     result=dict(result))


def run_training(lakehouse: Lakehouse, cfg: TrainConfig, launch: LaunchConfig, *,
                 run_dir: str | Path | None = None, run_id: str | None = None,
                 env: dict[str, str] | None = None) -> RunResult:
    """Train under torchrun with restarts; record the run in ``runs`` with lineage.

    Args:
        lakehouse: Where ``runs`` is recorded and the final checkpoint is stored.
        cfg: The resolved training config (``shards_version`` pinned).
        launch: Processes, nodes, restarts, watchdog.
        run_dir: Run folder (default ``./runs/<run_id>``); an existing one is resumed.
        run_id: Run id (default: the run folder's name, or a new id).
        env: Environment of the ranks (default: this process's).

    The saved model folder (uploaded to ``runs/<run_id>/final``) is the run's model with its
    output calibrated on its training windows (:mod:`train.calibrate`) and holds a model
    card, ``README.md`` (:func:`model_card`).

    Raises:
        ConfigError: options that cannot work (:func:`check_backbone`, :func:`check_options`).
        TrainingFailed: the job still failed after ``max_restarts`` restarts.
    """
    check_backbone(lakehouse, cfg)
    check_options(lakehouse, cfg)
    run_id = run_id or (Path(run_dir).name if run_dir else
                        f"{cfg.dataset}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}")
    run_dir = Path(run_dir or Path("runs") / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    writes = launch.node_rank == 0
    lineage = Lineage(operation="train", inputs={"shards": cfg.shards_version},
                      config={"run_id": run_id, **cfg.to_dict(), "nproc": launch.nproc,
                              "nnodes": launch.nnodes})
    started = datetime.now(UTC)
    if writes:
        lakehouse.merge("runs", [_runs_row(run_id, cfg, "running", started)], lineage=lineage)
    ok, attempts = run_attempts(run_dir, launch, env=env)
    result = json.loads((run_dir / "result.json").read_text()) \
        if ok and (run_dir / "result.json").exists() else {}
    skipped = json.loads((run_dir / "skip.json").read_text()) \
        if (run_dir / "skip.json").exists() else []
    metrics = {**summarise_metrics(run_dir), **result, "attempts": attempts,
               "skipped": skipped, "run_dir": str(run_dir)}
    uri = None
    if ok and writes and result.get("checkpoint"):
        # the run's model, its output shift calibrated on its training windows (a copy:
        # the checkpoint stays as resume expects it)
        from train.calibrate import calibrate_model

        final = run_dir / "final"
        cal = calibrate_model(result["checkpoint"], final, lakehouse=lakehouse,
                              dataset=cfg.dataset, version=cfg.shards_version)
        # "checkpoint" stays the checkpoint the validation metrics are of; "model" is the
        # run's model
        result = {**result, "model": str(final), "calibration": cal}
        metrics.update(model=result["model"], calibration=cal)
        (run_dir / "result.json").write_text(json.dumps(result, indent=2))
        card = model_card(lakehouse, run_id, cfg, result)
        card.write(final)
        checkpoint.describe(final, target=card.target, run_id=run_id)
        uri = upload_model(lakehouse, run_id, final)
    status = "finished" if ok else "failed"
    if writes:
        lakehouse.merge("runs", [_runs_row(run_id, cfg, status, started, metrics, uri,
                                           datetime.now(UTC))], lineage=lineage)
    res = RunResult(run_id=run_id, run_dir=run_dir, status=status, attempts=attempts,
                    metrics=metrics, checkpoint_uri=uri, skipped=skipped)
    if not ok:
        raise TrainingFailed(
            f"Training run {run_id} failed {attempts} time(s); logs of every rank are in "
            f"{run_dir / 'logs'}. Raise --max-restarts or fix the cause and rerun with "
            f"--run-dir {run_dir} to resume from the newest checkpoint.")
    return res
