"""`corpus noise --evaluate`: metrics, the held-out split, and mined noise against real OCR."""

from __future__ import annotations

import math

import numpy as np

from noise.evaluate import char_class, jensen_shannon, split_books, text_stats, wasserstein


def test_jensen_shannon_bounds_and_symmetry():
    p = {"a": 3, "b": 1}
    assert jensen_shannon(p, p) == 0.0
    assert math.isclose(jensen_shannon({"a": 1}, {"b": 1}), 1.0)
    q = {"a": 1, "b": 1, "c": 2}
    assert 0 < jensen_shannon(p, q) < 1
    assert math.isclose(jensen_shannon(p, q), jensen_shannon(q, p))


def test_wasserstein_of_shifted_samples():
    a = [0.01, 0.02, 0.03]
    assert math.isclose(wasserstein(a, [x + 0.05 for x in a]), 0.05, rel_tol=1e-9)
    assert wasserstein(a, a) == 0.0
    # unequal sizes: the distance between the empirical distributions
    assert math.isclose(wasserstein([0.0], [0.0, 1.0]), 0.5)


def test_split_is_stable_and_disjoint():
    books = [f"97800000{i:05d}" for i in range(50)]
    mine, held = split_books(books, holdout=0.3, seed=0)
    assert len(held) == 15 and not set(mine) & set(held) and set(mine) | set(held) == set(books)
    assert split_books(reversed(books), holdout=0.3, seed=0) == (mine, held)
    assert split_books(books, holdout=0.3, seed=1) != (mine, held)


def test_text_stats_counts_kinds_and_confusions():
    ref = "The cat sat on the mat. " * 20
    hyp = ref.replace("cat", "cot").replace(" on ", " on\n", 3)
    s = text_stats(ref, hyp)
    assert s.edit_kinds["replace letter>letter"] == 20
    assert s.edit_kinds["replace space>newline"] == 3
    assert s.confusions == {"a>o": 20}
    assert math.isclose(s.cer, 23 / len(ref))
    assert [char_class(c) for c in ("", "\n", " ", "7", "é", "—")] == \
        ["none", "newline", "space", "digit", "letter", "punct"]
    assert np.isfinite(s.cer)
