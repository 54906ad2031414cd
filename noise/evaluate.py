"""`corpus noise --evaluate`: do synthetic variants look like real OCR of the same books?

The scanned books that also have an edited text are split in two by a stable hash of their
ids: the *mining* share is mined exactly as ``corpus mine`` would (the same pure function of
:mod:`noise.mine`), and the noise model built from it makes variants of the *held-out*
books' edited texts, which the model has never seen in any form. Each held-out book then has
its real OCR text and one synthetic variant per recipe:

* ``mined`` — this package's model;
* ``uniform`` — uniform random character noise (substitutions, deletions, insertions) at the
  mining share's mean CER;
* ``nlpaug`` — nlpaug's ``OcrAug`` (its fixed table of OCR confusions) tuned to the same
  mean CER, when nlpaug can be run (in this Python or one given with ``nlpaug_python``).

Every text is aligned against the edited text (:func:`noise.align.align`) and compared with
the real OCR on three things: the per-book CER distribution (Wasserstein-1 distance between
the two samples, in CER points), the distribution of edit kinds (op kind × character class
of both sides, e.g. ``replace space>newline``, ``insert letter``; Jensen–Shannon divergence,
base 2, so 0 is identical and 1 disjoint) and the distribution of character confusions
(single-character substitutions between non-space characters; Jensen–Shannon divergence).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from catalog import ConfigError, CorpusError, Lakehouse
from catalog.workers import process_pool
from noise.align import align
from noise.generate import BookMeta, book_rng, noisy_text, uniform_noise
from noise.model import NoiseModel, model_from_tables

log = logging.getLogger(__name__)

# The recipes compared with real OCR, one row each in the report (`corpus noise --recipe`
# writes only the first two: noise.generate.RECIPES).
COMPARED_RECIPES = ("mined", "uniform", "nlpaug")


@dataclass(frozen=True)
class NoiseEvalConfig:
    """Options of ``corpus noise --evaluate``.

    Attributes:
        holdout: Share of the scanned books held out from mining (at least one book is).
        seed: Seed of the split and of every synthetic variant.
        cer_scale: Passed to the mined recipe.
        workers: Processes for mining alignments and evaluation alignments.
        nlpaug_python: A Python interpreter that can import nlpaug (a separate environment:
            nlpaug pulls pandas); None tries this interpreter and skips nlpaug if it fails.
    """

    holdout: float = 0.3
    seed: int = 0
    cer_scale: float = 1.0
    workers: int = 2
    nlpaug_python: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise ConfigError(f"--holdout is the share of books held out, strictly between 0 "
                              f"and 1; got {self.holdout}.")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}.")


# ---- metrics (pure) ------------------------------------------------------------------------

def char_class(ch: str) -> str:
    """``newline``, ``space``, ``digit``, ``letter``, ``punct`` or ``none`` (empty)."""
    if not ch:
        return "none"
    if ch == "\n":
        return "newline"
    if ch.isspace():
        return "space"
    if ch.isdigit():
        return "digit"
    if ch.isalpha():
        return "letter"
    return "punct"


@dataclass
class TextStats:
    """What one aligned (edited, other) pair contributes to the comparison."""

    cer: float
    edit_kinds: Counter
    confusions: Counter


def text_stats(reference: str, hypothesis: str) -> TextStats:
    """Align ``hypothesis`` against ``reference``; CER, edit kinds and confusions."""
    a = align(reference, hypothesis, words=False)
    kinds: Counter = Counter()
    conf: Counter = Counter()
    for op in a.ops:
        r = reference[op.ref_start:op.ref_end]
        h = hypothesis[op.hyp_start:op.hyp_end]
        if op.kind == "replace":
            kinds[f"replace {char_class(r)}>{char_class(h)}"] += 1
            if not r.isspace() and not h.isspace():
                conf[f"{r}>{h}"] += 1
        elif op.kind == "insert":
            kinds[f"insert {char_class(h)}"] += 1
        else:
            kinds[f"delete {char_class(r)}"] += 1
    return TextStats(a.cer, kinds, conf)


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of two count or probability maps."""
    keys = sorted(set(p) | set(q))
    if not keys:
        return 0.0
    a = np.array([p.get(k, 0.0) for k in keys], dtype=float)
    b = np.array([q.get(k, 0.0) for k in keys], dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        return 1.0 if a.sum() != b.sum() else 0.0
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, 0.5 * kl(a) + 0.5 * kl(b))


def wasserstein(a: Sequence[float], b: Sequence[float]) -> float:
    """Wasserstein-1 distance between two 1-D samples (empirical distributions)."""
    if not len(a) or not len(b):
        return math.nan
    xs = np.sort(np.asarray(a, dtype=float))
    ys = np.sort(np.asarray(b, dtype=float))
    grid = np.sort(np.concatenate([xs, ys]))
    fa = np.searchsorted(xs, grid[:-1], side="right") / len(xs)
    fb = np.searchsorted(ys, grid[:-1], side="right") / len(ys)
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


@dataclass
class RecipeScore:
    """One recipe's distance to real OCR over the held-out books."""

    recipe: str
    books: int
    mean_cer: float
    cer_distance: float
    edit_kind_jsd: float
    confusion_jsd: float
    note: str = ""


@dataclass
class EvalResult:
    """The comparison table and what it was computed on."""

    real_mean_cer: float
    scores: list[RecipeScore]
    mining_books: list[str]
    heldout_books: list[str]
    inputs: dict[str, int] = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    top_kinds: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def score(self, recipe: str) -> RecipeScore | None:
        """The row of ``recipe`` (None when it did not run)."""
        return next((s for s in self.scores if s.recipe == recipe), None)

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def compare(real: Sequence[TextStats], synthetic: Sequence[TextStats], recipe: str,
            note: str = "") -> RecipeScore:
    """Distances between a recipe's synthetic stats and the real ones (same books)."""
    kinds_r, kinds_s, conf_r, conf_s = Counter(), Counter(), Counter(), Counter()
    for s in real:
        kinds_r.update(s.edit_kinds)
        conf_r.update(s.confusions)
    for s in synthetic:
        kinds_s.update(s.edit_kinds)
        conf_s.update(s.confusions)
    return RecipeScore(
        recipe=recipe, books=len(synthetic),
        mean_cer=float(np.mean([s.cer for s in synthetic])) if synthetic else math.nan,
        cer_distance=wasserstein([s.cer for s in real], [s.cer for s in synthetic]),
        edit_kind_jsd=jensen_shannon(kinds_r, kinds_s),
        confusion_jsd=jensen_shannon(conf_r, conf_s), note=note)


def holdout_books(book_ids: Iterable[str], *, holdout: float, seed: int,
                ) -> tuple[list[str], list[str]]:
    """``(mining, held_out)``: a stable split by a hash of ``(seed, book_id)``."""
    ranked = sorted(set(book_ids), key=lambda b: hashlib.blake2b(
        f"split\x00{seed}\x00{b}".encode(), digest_size=8).digest())
    k = min(len(ranked) - 1, max(1, round(holdout * len(ranked))))
    if len(ranked) < 2:
        raise CorpusError(f"--evaluate needs at least 2 books with both an edited and an ocr "
                          f"text (one to mine, one to hold out); found {len(ranked)}.")
    return sorted(ranked[k:]), sorted(ranked[:k])


# ---- nlpaug baseline -------------------------------------------------------------------------

# Run by an interpreter that has nlpaug (possibly another environment than this one): reads
# {"texts": [...], "seed": n, "word_p": x, "char_p": y} on stdin, writes the augmented texts.
# Each paragraph is augmented on its own: OcrAug's word selection is quadratic in the words
# of one call and caps them (aug_word_max), so whole books are not what it is built for.
NLPAUG_SCRIPT = r"""
import json, random, re, sys, time
import numpy as np
import nlpaug.augmenter.char as nac
req = json.load(sys.stdin)
random.seed(req["seed"]); np.random.seed(req["seed"] % 2**32)
aug = nac.OcrAug(aug_word_p=req["word_p"], aug_char_p=req["char_p"], aug_word_max=None,
                 aug_char_max=None, aug_char_min=1, aug_word_min=0)
def one(text):
    parts = re.split(r"(\n+)", text)
    out = []
    for p in parts:
        if p and not p.startswith("\n") and p.strip():
            r = aug.augment(p)
            out.append(r[0] if isinstance(r, list) else r)
        else:
            out.append(p)
    return "".join(out)
t0 = time.perf_counter()
outs = [one(t) for t in req["texts"]]
json.dump({"texts": outs, "seconds": time.perf_counter() - t0}, sys.stdout)
"""


def nlpaug_available(python: str | None) -> str | None:
    """The interpreter that can run nlpaug (``python`` or this one), or None."""
    exe = python or sys.executable
    try:
        subprocess.run([exe, "-c", "import nlpaug.augmenter.char"], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        if python:
            raise ConfigError(f"--nlpaug-python {python}: cannot import nlpaug there. Make "
                              "one with `python -m venv V && V/bin/pip install nlpaug`.") \
                from None
        return None
    return exe


def nlpaug_ocr(texts: Sequence[str], *, python: str, seed: int, word_p: float,
               char_p: float = 0.3) -> tuple[list[str], float]:
    """nlpaug's OcrAug over ``texts`` (in ``python``); returns outputs and its own seconds."""
    req = json.dumps({"texts": list(texts), "seed": seed, "word_p": word_p, "char_p": char_p})
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run([python, "-c", NLPAUG_SCRIPT], input=req, capture_output=True,
                          text=True, check=False, env=env)
    if done.returncode != 0:
        raise CorpusError(f"nlpaug failed: {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout)
    return out["texts"], out["seconds"]


def _cer(reference: str, hypothesis: str) -> float:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(reference, hypothesis) / max(1, len(reference))


def nlpaug_word_p(texts: Sequence[str], *, python: str, target_cer: float, seed: int) -> float:
    """The ``aug_word_p`` at which OcrAug's CER on ``texts`` is ``target_cer`` (two probes,
    linear: its CER is proportional to the share of words it touches)."""
    probe = 0.3
    outs, _ = nlpaug_ocr(texts, python=python, seed=seed, word_p=probe)
    got = float(np.mean([_cer(t, o) for t, o in zip(texts, outs, strict=True)]))
    if got <= 0:
        return 1.0
    return float(min(1.0, probe * target_cer / got))


# ---- the driver ------------------------------------------------------------------------------

def _stats_task(args: tuple[str, str]) -> TextStats:
    return text_stats(*args)


def _stats(pairs: list[tuple[str, str]], workers: int) -> list[TextStats]:
    if workers <= 1 or len(pairs) < 4:
        return [text_stats(r, h) for r, h in pairs]
    with process_pool(workers) as pool:
        return list(pool.map(_stats_task, pairs, chunksize=2))


def evaluate(pairs: Sequence, *, config: NoiseEvalConfig,
             nlpaug_python: str | None = None) -> EvalResult:
    """Mine on one share of ``pairs`` (:class:`noise.mine.Pair`), compare on the other.

    The mining share goes through :func:`noise.mine.mine`, the pure core of ``corpus
    mine``, so the held-out books never reach the model.

    Args:
        pairs: Edited/OCR pairs with page offsets, chapter offsets, title and author.
        config: Options.
        nlpaug_python: Interpreter with nlpaug for that baseline (None: skipped).
    """
    from noise.mine import MineConfig, mine

    t0 = time.perf_counter()
    by = {p.book_id: p for p in pairs}
    mining, held = holdout_books(by, holdout=config.holdout, seed=config.seed)
    align_t, art_t = mine([by[b] for b in mining], config=MineConfig(workers=config.workers))
    alignments = align_t.to_pylist()
    model: NoiseModel = model_from_tables(
        art_t.to_pylist(), alignments,
        edited_texts=[by[r["book_id"]].edited for r in alignments])
    real_cers = [r["cer"] for r in alignments if r.get("cer") is not None]
    target = float(np.mean(real_cers))
    edited = [by[b].edited for b in held]
    synth: dict[str, list[str]] = {"mined": [], "uniform": []}
    for b in held:
        p = by[b]
        meta = BookMeta(b, p.title or "", p.author or "")
        synth["mined"].append(noisy_text(
            p.edited, model=model, meta=meta, seed=config.seed,
            chapter_offsets=p.chapter_offsets or (), cer_scale=config.cer_scale).text)
        synth["uniform"].append(uniform_noise(p.edited, cer=target,
                                              rng=book_rng(config.seed, b)))
    notes = {"uniform": f"uniform substitutions/deletions/insertions at CER {target:.3f}"}
    if nlpaug_python:
        train = [by[b].edited for b in mining]
        wp = nlpaug_word_p(train, python=nlpaug_python, target_cer=target, seed=config.seed)
        synth["nlpaug"], _ = nlpaug_ocr(edited, python=nlpaug_python, seed=config.seed,
                                        word_p=wp)
        notes["nlpaug"] = f"OcrAug aug_word_p={wp:.3f} aug_char_p=0.3 (tuned to CER {target:.3f})"
    else:
        notes["nlpaug"] = "not run: nlpaug is not importable (give --nlpaug-python)"
    jobs = [(by[b].edited, by[b].raw) for b in held]
    for name in synth:
        jobs += list(zip(edited, synth[name], strict=True))
    stats = _stats(jobs, config.workers)
    n = len(held)
    real = stats[:n]
    scores = []
    top: dict[str, dict[str, float]] = {}
    kinds_real = sum((s.edit_kinds for s in real), Counter())
    top["real"] = _shares(kinds_real)
    for i, name in enumerate(synth):
        part = stats[n * (i + 1): n * (i + 2)]
        scores.append(compare(real, part, name, notes.get(name, "")))
        top[name] = _shares(sum((s.edit_kinds for s in part), Counter()))
    if "nlpaug" not in synth:
        scores.append(RecipeScore("nlpaug", 0, math.nan, math.nan, math.nan, math.nan,
                                  notes["nlpaug"]))
    return EvalResult(real_mean_cer=float(np.mean([s.cer for s in real])), scores=scores,
                      mining_books=mining, heldout_books=held, model=model.summary(),
                      top_kinds=top, seconds=time.perf_counter() - t0)


def _shares(c: Counter, k: int = 8) -> dict[str, float]:
    total = sum(c.values()) or 1
    return {key: round(v / total, 4) for key, v in c.most_common(k)}


def run_evaluate(lakehouse: Lakehouse, *, config: NoiseEvalConfig) -> EvalResult:
    """Evaluate on the lakehouse's scanned books (pinned ``texts`` and ``books``)."""
    from noise.mine import MineConfig, read_pairs

    pins = lakehouse.pin("texts", "books")
    pairs = read_pairs(lakehouse, config=MineConfig(), versions=pins)
    python = nlpaug_available(config.nlpaug_python)
    result = evaluate(pairs, config=config, nlpaug_python=python)
    result.inputs = pins
    return result


def format_report(r: EvalResult) -> str:
    """The comparison as a plain-text table (lower is closer to real OCR)."""
    lines = [f"held-out books: {len(r.heldout_books)} (mined on {len(r.mining_books)}); "
             f"real OCR mean CER {r.real_mean_cer:.4f}",
             f"{'recipe':<9} {'books':>5} {'mean CER':>9} {'CER W1':>8} {'kinds JSD':>10} "
             f"{'confusion JSD':>14}  note"]
    for s in r.scores:
        lines.append(f"{s.recipe:<9} {s.books:>5} {s.mean_cer:>9.4f} {s.cer_distance:>8.4f} "
                     f"{s.edit_kind_jsd:>10.4f} {s.confusion_jsd:>14.4f}  {s.note}")
    return "\n".join(lines)
