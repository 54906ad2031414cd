"""Intercept calibration: a trained model's output shifted so that its mean residual on its own
training windows is zero.

Why: a run ends with whatever constant offset its last steps left it. In R1 (lora-noisy,
seeds 0-2) the mean residual (prediction - truth) on 400 training passages was +0.04, -0.04
and -0.20, and the held-out bias followed it within 0.05 (+0.00, -0.09, -0.24) while the
ranking was the same (Spearman 0.84 for all three). The offset is learned, not in the data,
so it can be measured where training happened: the model's output shift (``target_mean``,
see :mod:`train.model`) is moved by minus its mean residual over a fixed random sample of the
run's *training* windows. No held-out text is read, so the held-out figures stay honest.

The model folder is copied, never changed in place (a checkpoint stays what an exact resume
expects), and the copy records what was done in ``calibration.json``; a calibrated model is
not calibrated again.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from catalog import Lakehouse
from catalog.errors import ConfigError

CALIBRATION_FILE = "calibration.json"
CALIBRATION_WINDOWS = 1024  # a sample of the training windows: ~30 s on 2 cores for MiniLM
CALIBRATION_SEED = 0


def mean_residual(preds: list[float], targets: list[float]) -> float:
    """Mean of prediction minus truth (the bias), summed exactly."""
    if not preds or len(preds) != len(targets):
        raise ConfigError(f"calibration needs as many predictions as targets, at least one "
                          f"(got {len(preds)} and {len(targets)}).")
    return math.fsum(p - t for p, t in zip(preds, targets, strict=True)) / len(preds)


def calibration_of(folder: str | Path) -> dict[str, Any] | None:
    """What ``calibration.json`` of a model folder says (None: not calibrated)."""
    path = Path(folder) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.exists() else None


def calibrate_model(src: str | Path, dest: str | Path, *, lakehouse: Lakehouse, dataset: str,
                    version: int | None, windows: int = CALIBRATION_WINDOWS,
                    seed: int = CALIBRATION_SEED, batch: int = 16) -> dict[str, Any]:
    """Copy the model folder ``src`` to ``dest`` with its output shifted by minus its mean
    residual on ``windows`` training windows of ``dataset`` (shards version ``version``),
    drawn in a fixed order (``seed``). ``dest`` is replaced as a whole (written beside it,
    then renamed). Returns what ``calibration.json`` records.

    Raises:
        ConfigError: ``src`` is calibrated already, or the split has no windows.
    """
    import torch

    from train.data import ShardStream
    from train.model import CONFIG_FILE, load_model

    src, dest = Path(src), Path(dest)
    if calibration_of(src) is not None:
        raise ConfigError(f"The model in {src} is calibrated already "
                          f"({CALIBRATION_FILE}); calibrate the run's uncalibrated model.")
    model = load_model(src).eval()
    stream = ShardStream(lakehouse, dataset, version=version, split="train", rank=0,
                         world_size=1, seed=seed, shuffle=True)
    preds: list[float] = []
    targets: list[float] = []
    with torch.no_grad():
        for b in stream.loader(batch):
            preds += model(b["input_ids"], b["attention_mask"]).float().tolist()
            targets += b["targets"].tolist()
            if len(preds) >= windows:
                break
    preds, targets = preds[:windows], targets[:windows]
    if not preds:
        raise ConfigError(f"Dataset {dataset!r} has no training windows to calibrate on.")
    offset = mean_residual(preds, targets)
    before = model.cfg.target_mean
    cfg = replace(model.cfg, target_mean=before - offset)
    record = {"offset": offset, "windows": len(preds), "seed": seed, "dataset": dataset,
              "shards_version": stream.version, "target_mean_before": before,
              "target_mean_after": cfg.target_mean}
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    (tmp / CALIBRATION_FILE).write_text(json.dumps(record, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return record


def calibrate_run(lakehouse: Lakehouse, run_id: str, *, windows: int = CALIBRATION_WINDOWS,
                  seed: int = CALIBRATION_SEED) -> dict[str, Any] | None:
    """Calibrate the model of a finished run trained before calibration was part of
    training: the calibrated copy is stored under ``runs/<run_id>/calibrated`` and the run's
    ``runs`` row points to it (its metrics gain ``calibration``), with lineage. Returns what
    was recorded, or None when the run's model is calibrated already (nothing is written).
    Evaluate the run again afterwards: its old predictions came from the old model.

    Raises:
        ConfigError: no such finished run with a model.
    """
    import tempfile

    from catalog import Lineage
    from train.evaluate import fetch_model, find_run
    from train.launch import upload_model

    run = find_run(lakehouse, run_id)
    src = fetch_model(lakehouse, run["checkpoint_uri"])
    if calibration_of(src) is not None:
        return None
    with tempfile.TemporaryDirectory(prefix="corpus-calibrate-") as tmp:
        dest = Path(tmp) / "model"
        record = calibrate_model(src, dest, lakehouse=lakehouse, dataset=run["dataset"],
                                 version=run["shards_version"], windows=windows, seed=seed)
        uri = upload_model(lakehouse, run["run_id"], dest, name="calibrated")
    metrics = {**json.loads(run["metrics"] or "{}"), "calibration": record}
    lineage = Lineage(operation="calibrate", inputs={"shards": record["shards_version"]},
                      config={"run_id": run["run_id"], "windows": windows, "seed": seed,
                              "model_before": run["checkpoint_uri"]})
    lakehouse.merge("runs", [{**run, "checkpoint_uri": uri,
                              "metrics": json.dumps(metrics, sort_keys=True, default=str)}],
                    lineage=lineage)
    return {**record, "checkpoint_uri": uri}
