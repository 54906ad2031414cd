"""Training checkpoints: written atomically, found again after a crash.

A checkpoint is a folder ``<run>/checkpoints/step-000000120/`` holding the model's trainable
weights (LoRA adapter and head, :func:`train.model.save_model`), ``train_state.pt`` (optimizer,
scheduler, loader position, RNG states of every rank, step and epoch) and ``meta.json``. It is
written into a temporary sibling folder and renamed into place, so a crash while saving leaves
either the previous checkpoint or the new one, never half of one. Only rank 0 calls
:func:`save_checkpoint`.

With early stopping the best model by validation metric is kept apart, in
``<run>/best/step-000000080/`` (model files and ``meta.json`` with its validation metrics),
written the same atomic way (:func:`save_best`). A best folder stays until a step checkpoint
that no longer names it as the best is in place (:func:`prune_best`): a run resumed from
any checkpoint finds the best model that checkpoint knew.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
BEST_DIR = "best"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
_NAME = re.compile(r"^step-(\d{9})$")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps (sorts by step)."""
    return f"step-{step:09d}"


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and CUDA), as tensors and lists."""
    import numpy as np

    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": list(py_internal),
        "python_gauss": py_gauss,
        "python_version": py_version,
        "numpy": {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    import numpy as np

    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_folder(final: Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling of ``final`` with ``write``, fsync it and rename it into
    place (an existing ``final`` is swapped out, then dropped)."""
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        write(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # the same step saved again after a resume: swap, then drop
            old = root / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_checkpoint(run_dir: str | Path, *, step: int, model: Any, train_state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep``.

    Args:
        run_dir: The run folder.
        step: Optimizer steps done (names the checkpoint).
        model: A :class:`train.model.ReadingLevelModel` (unwrapped from DDP).
        train_state: Optimizer, scheduler, loader and RNG states, step, epoch (torch-saveable:
            tensors, numbers, strings, lists and dicts).
        keep: Checkpoints to keep (older ones are deleted after the new one is in place).

    Returns:
        The checkpoint folder.
    """
    from train.model import save_model

    def write(tmp: Path) -> None:
        save_model(model, tmp)
        torch.save(train_state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"step": step, "saved_at": time.time()}))

    final = _write_folder(Path(run_dir) / CKPT_DIR / checkpoint_name(step), write)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", final)
    return final


def save_best(run_dir: str | Path, *, step: int, model: Any, metrics: dict[str, Any]) -> Path:
    """Write the model of ``step`` as a best model (atomically), with its validation metrics
    in ``meta.json``. Older best folders stay until :func:`prune_best` drops them."""
    from train.model import save_model

    def write(tmp: Path) -> None:
        save_model(model, tmp)
        (tmp / META_FILE).write_text(json.dumps({"step": step, "metrics": metrics,
                                                 "saved_at": time.time()}))

    final = _write_folder(Path(run_dir) / BEST_DIR / checkpoint_name(step), write)
    log.info("best model so far: %s", final)
    return final


def describe(folder: str | Path, **fields: Any) -> None:
    """Add ``fields`` to a saved model's ``meta.json`` (atomically: a reader sees the old file
    or the new one). The final model records what it predicts (``target``) and its
    ``run_id``, so a copy of the folder still says so to ``corpus score --model``."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        meta = {}
    meta.update(fields)
    tmp = path.with_name(f".{META_FILE}.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, path)


def best_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete best-model folders of a run, oldest step first."""
    root = Path(run_dir) / BEST_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _NAME.match(p.name) and (p / META_FILE).exists())


def best_checkpoint(run_dir: str | Path, step: int) -> Path | None:
    """The best-model folder of ``step``, or None when there is none."""
    folder = Path(run_dir) / BEST_DIR / checkpoint_name(step)
    return folder if (folder / META_FILE).exists() else None


def prune_best(run_dir: str | Path, keep_step: int) -> None:
    """Drop every best-model folder but ``keep_step``'s (and half-written ones).

    Called after a step checkpoint naming ``keep_step`` as the best is in place, and on
    resume: a best folder newer than the resumed checkpoint is from steps about to be
    replayed.
    """
    root = Path(run_dir) / BEST_DIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name != checkpoint_name(keep_step):
            shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if _NAME.match(p.name) and (p / META_FILE).exists() and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_train_state(ckpt: str | Path) -> dict[str, Any]:
    """The training state saved with a checkpoint (tensors and plain data only)."""
    return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=True)
