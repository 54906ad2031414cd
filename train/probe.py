"""A frozen-layer probe: how much of the target each layer of a backbone already encodes.

Before paying for a fine-tuning, an engineer can ask of each candidate backbone: if I freeze
it and fit a ridge regression on one layer's mean-pooled hidden states, how well does that
predict the reading level of books it has never seen? The probe answers per layer, in
minutes on a CPU.

Two parts, as every stage:

* :func:`probe_layers`, the pure core: per-layer features of training and held-out books
  in, per-layer held-out metrics out. Ridge in closed form with numpy; features are
  standardised with the training rows' statistics, and the penalty ``alpha`` is chosen from a
  small grid by k-fold cross-validation over the *training* rows only, so nothing about the
  held-out books (their features or their targets) shapes the fit.
* :func:`run_probe`, the driver: reads a pinned shards dataset (train and validation split),
  runs the frozen backbone over each book's first windows and pools them
  (:func:`window_features`, :func:`book_features`), then calls the core. It writes no table:
  a probe is a read-only measurement.

A book's feature is the mean over its windows of the mask-averaged hidden states, so the probe
predicts one number per book, as ``corpus eval`` scores per book. Layer 0 is the embedding
output, layer ``i`` the output of block ``i``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from catalog import ConfigError, Lakehouse
from train.evaluate import regression_metrics

log = logging.getLogger(__name__)

# Penalties tried on standardised features; wide on purpose: with a few dozen books and
# hundreds of features the right one is often large.
DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0)
HELD_OUT = "validation"  # the split the probe scores on (as `corpus eval`)


# ---- the pure core: ridge per layer ------------------------------------------------------
@dataclass(frozen=True)
class LayerScore:
    """One layer's probe: held-out metrics of the ridge fit on its features.

    Attributes:
        layer: 0 is the embedding output, ``i`` the output of block ``i``.
        rmse, mae, bias, spearman: Held-out metrics (:func:`train.evaluate.regression_metrics`).
        n: Held-out books scored.
        alpha: The penalty chosen on the training split.
        cv_rmse: The cross-validated RMSE of that penalty on the training split.
    """

    layer: int
    rmse: float
    mae: float
    bias: float
    spearman: float
    n: int
    alpha: float
    cv_rmse: float


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of the columns of ``x``; a constant column gets scale 1 (it is then
    all zeros after centring and the penalty keeps its weight at zero)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def fit_ridge(x: np.ndarray, y: np.ndarray, *, alpha: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Closed-form ridge on features standardised with ``x``'s own statistics.

    Args:
        x: Training features, ``(n, d)``.
        y: Training targets, ``(n,)``.
        alpha: Penalty on the squared weights (the intercept is not penalised).

    Returns:
        ``(mean, scale, weights, intercept)``: predict with
        ``((x - mean) / scale) @ weights + intercept`` (:func:`predict_ridge`).
    """
    mean, scale = _standardiser(x)
    z = (x - mean) / scale
    intercept = float(y.mean())
    yc = y - intercept
    n, d = z.shape
    # The smaller of the two equivalent systems: n x n (dual) when books are fewer than
    # features, as with a few dozen books and a 384-wide layer.
    if n < d:
        w = z.T @ np.linalg.solve(z @ z.T + alpha * np.eye(n), yc)
    else:
        w = np.linalg.solve(z.T @ z + alpha * np.eye(d), z.T @ yc)
    return mean, scale, w, intercept


def predict_ridge(model: tuple[np.ndarray, np.ndarray, np.ndarray, float],
                  x: np.ndarray) -> np.ndarray:
    """Predictions of a :func:`fit_ridge` model for the rows of ``x``."""
    mean, scale, w, intercept = model
    return ((x - mean) / scale) @ w + intercept


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index sets covering ``range(n)``, in a seeded order."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def choose_alpha(x: np.ndarray, y: np.ndarray, *, alphas: Sequence[float], folds: int = 5,
                 seed: int = 0) -> tuple[float, float]:
    """The penalty with the lowest k-fold cross-validated RMSE on these (training) rows.

    Each fold is standardised and fit on the other folds only. Ties go to the larger
    penalty (the simpler model).

    Returns:
        ``(alpha, cv_rmse)``.
    """
    n = len(y)
    parts = _folds(n, min(folds, n), seed)
    best: tuple[float, float] | None = None
    for alpha in sorted(alphas, reverse=True):
        sq = 0.0
        for part in parts:
            fit_rows = np.setdiff1d(np.arange(n), part)
            model = fit_ridge(x[fit_rows], y[fit_rows], alpha=alpha)
            sq += float(np.sum((predict_ridge(model, x[part]) - y[part]) ** 2))
        rmse = math.sqrt(sq / n)
        if best is None or rmse < best[1] - 1e-12:
            best = (float(alpha), rmse)
    assert best is not None  # alphas is non-empty (checked by the caller)
    return best


def probe_layers(
    train: Mapping[int, np.ndarray],
    held_out: Mapping[int, np.ndarray],
    y_train: Sequence[float],
    y_held_out: Sequence[float],
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = 5,
    seed: int = 0,
) -> list[LayerScore]:
    """Fit a ridge probe per layer on the training rows and score it on the held-out rows.

    For each layer, the penalty is chosen by :func:`choose_alpha` on the training rows, then
    the probe is refit on all training rows (standardised with their statistics) and applied
    to the held-out rows. The held-out rows are used for nothing but that last prediction.

    Args:
        train: Layer -> training features ``(n_train, d)``, one row per book.
        held_out: Layer -> held-out features ``(n_held_out, d)``, same layers and width.
        y_train: Targets of the training rows.
        y_held_out: Targets of the held-out rows.
        alphas: Penalties to choose from.
        folds: Cross-validation folds over the training rows (fewer if rows are fewer).
        seed: Seed of the fold assignment.

    Returns:
        One :class:`LayerScore` per layer, in layer order.

    Raises:
        ConfigError: layers differ between the two sides, shapes do not match the targets,
            fewer than 3 training or no held-out rows, or no (positive) penalty.
    """
    yt = np.asarray(y_train, dtype=np.float64)
    ye = np.asarray(y_held_out, dtype=np.float64)
    if set(train) != set(held_out) or not train:
        raise ConfigError(f"probe_layers needs the same, non-empty set of layers on both "
                          f"sides; found {sorted(train)} and {sorted(held_out)}.")
    if len(yt) < 3 or len(ye) < 1:
        raise ConfigError(f"a probe needs at least 3 training books and 1 held-out book; "
                          f"found {len(yt)} and {len(ye)}.")
    if not alphas or min(alphas) <= 0:
        raise ConfigError(f"alphas must be a non-empty list of positive penalties, found "
                          f"{list(alphas)}.")
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, found {folds}.")
    out = []
    for layer in sorted(train):
        xt = np.asarray(train[layer], dtype=np.float64)
        xe = np.asarray(held_out[layer], dtype=np.float64)
        if xt.ndim != 2 or xe.ndim != 2 or len(xt) != len(yt) or len(xe) != len(ye) \
                or xt.shape[1] != xe.shape[1]:
            raise ConfigError(f"layer {layer}: features {xt.shape} / {xe.shape} do not match "
                              f"{len(yt)} / {len(ye)} targets of one width.")
        alpha, cv_rmse = choose_alpha(xt, yt, alphas=alphas, folds=folds, seed=seed)
        m = regression_metrics(predict_ridge(fit_ridge(xt, yt, alpha=alpha), xe), ye)
        out.append(LayerScore(layer=layer, rmse=m["rmse"], mae=m["mae"], bias=m["bias"],
                              spearman=m["spearman"], n=m["n"], alpha=alpha,
                              cv_rmse=cv_rmse))
    return out


def best_layer(scores: Sequence[LayerScore]) -> int:
    """The layer with the lowest cross-validated RMSE on the *training* split (ties: the
    lower layer). Chosen without the held-out books, so its held-out RMSE is a fair
    estimate; picking the lowest held-out RMSE would flatter it."""
    return min(scores, key=lambda s: (s.cv_rmse, s.layer)).layer


# ---- features: the frozen backbone over the shards' windows ------------------------------
def window_features(windows: Sequence[np.ndarray], *, model: Any, pad_id: int,
                    layers: Sequence[int], batch: int = 16) -> dict[int, np.ndarray]:
    """Mask-averaged hidden states of each window at each of ``layers``.

    Args:
        windows: Token ids of each window (special tokens included, as in the shards).
        model: A frozen Hugging Face backbone (:func:`train.model.load_backbone`).
        pad_id: Padding id (masked out, so its value does not matter to the result).
        layers: Indices into ``hidden_states`` (0: embeddings).
        batch: Windows per forward pass.

    Returns:
        Layer -> float32 array ``(len(windows), hidden)``.
    """
    import torch

    from train.model import pad_windows

    device = next(model.parameters()).device
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(windows), batch):
                ids, mask = pad_windows(windows[i:i + batch], pad_id)
                hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               output_hidden_states=True).hidden_states
                m = mask.to(device).unsqueeze(-1).float()
                for layer in layers:
                    pooled = (hidden[layer].float() * m).sum(1) / m.sum(1).clamp(min=1.0)
                    out[layer].append(pooled.cpu().numpy())
    finally:
        model.train(was_training)
    return {layer: np.concatenate(parts).astype(np.float32) for layer, parts in out.items()}


def book_features(book_ids: Sequence[str], features: Mapping[int, np.ndarray]
                  ) -> tuple[list[str], dict[int, np.ndarray]]:
    """Per-book features: the mean of each book's window rows, books in first-seen order.

    Returns:
        ``(books, layer -> (len(books), hidden))``.
    """
    books = list(dict.fromkeys(book_ids))
    index = {b: i for i, b in enumerate(books)}
    rows = np.array([index[b] for b in book_ids])
    counts = np.bincount(rows, minlength=len(books)).astype(np.float64)[:, None]
    pooled = {}
    for layer, x in features.items():
        sums = np.zeros((len(books), x.shape[1]), dtype=np.float64)
        np.add.at(sums, rows, x)
        pooled[layer] = sums / counts
    return books, pooled


# ---- the driver --------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how hard.

    Attributes:
        backbone: Backbone alias (``all-minilm-l6-v2``, ``smollm2-135m``) or local folder;
            it must be the model the shards were tokenised for.
        layers: Layers to probe (0: embeddings, ``i``: block ``i``); empty: all of them.
        max_windows_per_book: The first N windows of each book (over its variants, in
            sample order) are run through the model; the cost is linear in it.
        batch: Windows per forward pass.
        threads: torch CPU threads while the probe runs (None: torch's default).
        alphas: Ridge penalties to choose from (on standardised features).
        folds: Cross-validation folds over the training books that choose the penalty.
        seed: Seed of the fold assignment.
        device: ``cpu`` or ``cuda``.
    """

    backbone: str
    layers: tuple[int, ...] = ()
    max_windows_per_book: int = 8
    batch: int = 16
    threads: int | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    folds: int = 5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.backbone:
            raise ConfigError("probe: backbone is empty: expected an alias or a local folder.")
        object.__setattr__(self, "layers", tuple(sorted(set(int(x) for x in self.layers))))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if any(x < 0 for x in self.layers):
            raise ConfigError(f"probe: layers are 0 (embeddings) or a block number, found "
                              f"{list(self.layers)}.")
        if self.max_windows_per_book < 1 or self.batch < 1:
            raise ConfigError(f"probe: max_windows_per_book and batch must be >= 1, found "
                              f"{self.max_windows_per_book} and {self.batch}.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"probe: threads must be >= 1, found {self.threads}.")
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"probe: alphas must be positive penalties, found "
                              f"{list(self.alphas)}.")
        if self.folds < 2:
            raise ConfigError(f"probe: folds must be >= 2, found {self.folds}.")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"probe: device must be cpu or cuda, found {self.device!r}.")


@dataclass(frozen=True)
class ProbeResult:
    """A probe of one backbone on one pinned shards dataset."""

    dataset: str
    shards_version: int
    backbone: str
    target: str
    n_train_books: int
    n_held_out_books: int
    n_train_windows: int
    n_held_out_windows: int
    scores: list[LayerScore]
    best_layer: int
    baseline: dict[str, float]  # predicting the training mean for every held-out book
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def shards_ref(self) -> str:
        """``DATASET@VERSION`` of the shards probed."""
        return f"{self.dataset}@{self.shards_version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``corpus probe --format json``)."""
        d = asdict(self)
        d["shards"] = self.shards_ref
        return d


def _first_windows(table: Any, max_windows: int) -> Any:
    """The first ``max_windows`` rows of each book (rows are in sample order)."""
    import pyarrow as pa

    seen: dict[str, int] = {}
    keep = []
    for b in table.column("book_id").to_pylist():
        n = seen.get(b, 0)
        keep.append(n < max_windows)
        seen[b] = n + 1
    return table.filter(pa.array(keep))


def run_probe(lakehouse: Lakehouse, *, dataset: str, version: int | None = None,
              config: ProbeConfig) -> ProbeResult:
    """Probe a frozen backbone's layers on a pinned shards dataset; writes nothing.

    Pins ``dataset`` at ``shards`` version ``version`` (the latest if None), runs the frozen
    backbone over the first ``config.max_windows_per_book`` windows of every training and
    validation book, pools them per book and layer, and scores a ridge probe per layer on the
    validation books (:func:`probe_layers`). A probe is a read-only measurement: no table is
    written and no lineage recorded; the result names the shards version it read.

    Raises:
        ConfigError: no such dataset or version, no validation split (nothing held out to
            score on), a backbone that is not the shards' tokenizer's model or whose
            positions are shorter than the windows, layers beyond the backbone's.
    """
    import torch

    from train.dataset import ShardDataset
    from train.launch import check_shards_backbone
    from train.model import ModelConfig, load_backbone
    from train.plan import load_arch

    t0 = time.perf_counter()
    ds = ShardDataset(lakehouse, dataset, version=version)
    if HELD_OUT not in ds.splits:
        raise ConfigError(f"shards {ds.ref} have no validation split, so no book is held out "
                          f"to score a probe on: build them with --val-frac > 0 (e.g. "
                          f"`corpus shards build --name {dataset} --val-frac 0.2 ...`).")
    check_shards_backbone(ds.manifest, ref=ds.ref, backbone=config.backbone)
    n_layers = load_arch(config.backbone).n_layers
    layers = config.layers or tuple(range(n_layers + 1))
    if max(layers) > n_layers:
        raise ConfigError(f"{config.backbone} has layers 0 (embeddings) to {n_layers}; "
                          f"--layers asked for {max(layers)}.")

    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        model = load_backbone(ModelConfig(config.backbone, lora_r=0, dtype="float32"),
                              torch.device(config.device))
        sides = {}
        for split in ("train", HELD_OUT):
            table = _first_windows(ds.to_arrow(split), config.max_windows_per_book)
            log.info("probe: %s windows of %s", table.num_rows, split)
            feats = window_features(table.column("input_ids").to_numpy(zero_copy_only=False),
                                    model=model, pad_id=ds.pad_id, layers=layers,
                                    batch=config.batch)
            ids = table.column("book_id").to_pylist()
            books, pooled = book_features(ids, feats)
            labels = dict(zip(ids, table.column("label").to_pylist(), strict=True))
            sides[split] = (books, pooled, [labels[b] for b in books], table.num_rows)
    finally:
        torch.set_num_threads(old_threads)

    (tb, tx, ty, tn), (eb, ex, ey, en) = sides["train"], sides[HELD_OUT]
    scores = probe_layers(tx, ex, ty, ey, alphas=config.alphas, folds=config.folds,
                          seed=config.seed)
    baseline = regression_metrics([float(np.mean(ty))] * len(ey), ey)
    return ProbeResult(dataset=dataset, shards_version=ds.version, backbone=config.backbone,
                       target=ds.metric, n_train_books=len(tb), n_held_out_books=len(eb),
                       n_train_windows=tn, n_held_out_windows=en, scores=scores,
                       best_layer=best_layer(scores), baseline=baseline,
                       seconds=time.perf_counter() - t0, config=asdict(config))
