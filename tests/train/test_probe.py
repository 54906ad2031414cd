"""The frozen-layer probe: ridge per layer on synthetic features (the layer with the signal
wins, the held-out rows choose nothing), per-book pooling, and the read-only driver on the
sample's shards with the real MiniLM backbone."""

from __future__ import annotations

import numpy as np
import pytest

from catalog import ConfigError, Lakehouse
from tests.helpers import import_sample, small_config
from train.probe import (
    ProbeConfig,
    best_layer,
    book_features,
    choose_alpha,
    fit_ridge,
    predict_ridge,
    probe_layers,
    run_probe,
)
from train.shards import books_by_split, build_shards

NOISE = 0.1


def _synthetic(seed: int = 0, n_train: int = 200, n_eval: int = 100, d: int = 20):
    """Layer 1 carries a linear signal (plus noise of sd NOISE), layer 0 is unrelated noise;
    columns on very different scales, as hidden states are."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-2, 2, d)
    x1 = rng.normal(size=(n_train + n_eval, d)) * scales
    w = rng.normal(size=d) / scales
    y = x1 @ w + rng.normal(scale=NOISE, size=n_train + n_eval)
    x0 = rng.normal(size=(n_train + n_eval, d)) * scales
    tr, ev = slice(0, n_train), slice(n_train, None)
    return ({0: x0[tr], 1: x1[tr]}, {0: x0[ev], 1: x1[ev]}, y[tr], y[ev])


def test_the_layer_with_the_signal_wins_at_the_noise_level():
    train, held, yt, ye = _synthetic()
    scores = {s.layer: s for s in probe_layers(train, held, yt, ye)}
    assert scores[1].rmse < 1.5 * NOISE, scores[1]
    # the noise layer does no better than predicting the mean
    assert scores[0].rmse > 0.8 * float(np.std(ye)) > 5 * scores[1].rmse
    assert best_layer(list(scores.values())) == 1
    # a clean signal with many more rows than features wants little penalty; noise a lot
    assert scores[1].alpha <= 1.0 and scores[0].alpha >= 1_000.0
    assert abs(scores[1].bias) < 0.05 and scores[1].n == len(ye)


def test_held_out_rows_choose_nothing():
    train, held, yt, ye = _synthetic(seed=1)
    base = probe_layers(train, held, yt, ye)
    rng = np.random.default_rng(7)
    # other held-out features (shifted, rescaled, random) and other held-out targets
    wild = {k: v * 1000 + 50 + rng.normal(size=v.shape) for k, v in held.items()}
    other = probe_layers(train, wild, yt, ye[::-1] * 3)
    assert [(s.layer, s.alpha, s.cv_rmse) for s in base] == \
        [(s.layer, s.alpha, s.cv_rmse) for s in other]
    assert best_layer(base) == best_layer(other)
    # ... while the held-out metrics do move: they are computed on those rows
    assert [s.rmse for s in base] != [s.rmse for s in other]


def test_standardisation_uses_training_statistics_only():
    train, held, yt, _ = _synthetic(seed=2)
    model = fit_ridge(train[1], yt, alpha=1.0)
    mean, scale, _, intercept = model
    np.testing.assert_allclose(mean, train[1].mean(axis=0))
    np.testing.assert_allclose(scale, train[1].std(axis=0))
    assert intercept == pytest.approx(yt.mean())
    # a held-out row equal to the training mean is predicted as the training mean of y
    assert predict_ridge(model, mean[None, :])[0] == pytest.approx(yt.mean())
    # rescaling a column on both sides changes nothing (the probe is scale-free)
    k = np.ones(train[1].shape[1])
    k[3] = 1e4
    np.testing.assert_allclose(predict_ridge(fit_ridge(train[1] * k, yt, alpha=1.0),
                                             held[1] * k),
                               predict_ridge(model, held[1]), rtol=1e-6, atol=1e-8)


def test_the_dual_and_primal_ridge_agree():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 80)), rng.normal(size=30)  # fewer rows than features: dual
    _, _, w_dual, _ = fit_ridge(x, y, alpha=5.0)
    z = (x - x.mean(0)) / x.std(0)
    w_primal = np.linalg.solve(z.T @ z + 5.0 * np.eye(80), z.T @ (y - y.mean()))
    np.testing.assert_allclose(w_dual, w_primal, rtol=1e-8, atol=1e-10)


def test_alpha_follows_the_noise():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 10))
    clean = x @ rng.normal(size=10)
    assert choose_alpha(x, clean, alphas=(0.1, 1000.0))[0] == 0.1
    assert choose_alpha(x, rng.normal(size=80), alphas=(0.1, 1000.0))[0] == 1000.0


def test_bad_inputs_are_config_errors():
    train, held, yt, ye = _synthetic()
    with pytest.raises(ConfigError, match="same, non-empty set of layers"):
        probe_layers({0: train[0]}, held, yt, ye)
    with pytest.raises(ConfigError, match="do not match"):
        probe_layers(train, held, yt[:-1], ye)
    with pytest.raises(ConfigError, match="at least 3 training"):
        probe_layers({0: train[0][:2]}, {0: held[0]}, yt[:2], ye)
    with pytest.raises(ConfigError, match="alphas"):
        ProbeConfig("all-minilm-l6-v2", alphas=(0.0,))
    with pytest.raises(ConfigError, match="max_windows_per_book"):
        ProbeConfig("all-minilm-l6-v2", max_windows_per_book=0)


def test_book_features_are_the_mean_of_each_books_windows():
    feats = {2: np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0]], dtype=np.float32)}
    books, pooled = book_features(["b", "b", "a"], feats)
    assert books == ["b", "a"]
    np.testing.assert_allclose(pooled[2], [[2.0, 1.0], [10.0, 10.0]])


# ---- the driver on the sample's shards ---------------------------------------------------
def test_run_probe_on_pinned_shards_writes_nothing(built):
    lh, _ = built
    before = {name: lh.open(name).version() for name in ("shards", "texts", "scores")}
    cfg = ProbeConfig("all-minilm-l6-v2", layers=(0, 6), max_windows_per_book=1, threads=1,
                      folds=3)
    r = run_probe(lh, dataset="clear", config=cfg)
    assert {name: lh.open(name).version() for name in before} == before
    manifest = lh.read("shards")
    splits = books_by_split(manifest, dataset="clear")
    assert (r.n_train_books, r.n_held_out_books) == (len(splits["train"]),
                                                    len(splits["validation"]))
    assert r.n_train_windows == r.n_train_books  # one window per book
    assert r.shards_version == before["shards"] and r.shards_ref == f"clear@{r.shards_version}"
    assert [s.layer for s in r.scores] == [0, 6] and r.best_layer in (0, 6)
    assert all(np.isfinite([s.rmse, s.mae, s.bias, s.cv_rmse]).all() for s in r.scores)
    assert r.target == "bt_easiness" and r.baseline["n"] == r.n_held_out_books
    # a layer beyond the backbone's is refused, naming the range
    with pytest.raises(ConfigError, match=r"layers 0 \(embeddings\) to 6"):
        run_probe(lh, dataset="clear", config=ProbeConfig("all-minilm-l6-v2", layers=(7,)))


def test_a_backbone_of_another_tokenizer_is_refused(built):
    lh, _ = built
    with pytest.raises(ConfigError, match="tokenised with 'all-minilm-l6-v2'"):
        run_probe(lh, dataset="clear", config=ProbeConfig("smollm2-135m"))


def test_shards_without_a_validation_split_are_refused(tmp_path):
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    import_sample(lh)
    build_shards(lh, config=small_config("all_train", val_frac=0.0))
    with pytest.raises(ConfigError, match=r"no validation split.*--val-frac"):
        run_probe(lh, dataset="all_train", config=ProbeConfig("all-minilm-l6-v2"))
