#!/usr/bin/env bash
# Reading level on CLEAR (BENCHMARKS.md, "R1"). The whole pipeline on the development share
# (its 65 real scans OCR'd, their artifact patterns mined, noisy twins of every text) and the
# 3,793 CLEAR excerpts (labelled passages); then every configuration below trained under
# torchrun (2 gloo ranks) once per seed, each run evaluated with `corpus eval`, each
# configuration's seeds averaged as an ensemble, and bench/clear_report.py turning the
# `predictions` table into R1's tables.
#
# Every run's model has its output calibrated on its own training windows (`corpus train`
# does it; `corpus calibrate` for a run trained before, then evaluated again).
#
# Held out: every scanned book of the share with every CLEAR passage it was made of (their
# works too), plus 15% of the other source volumes (`--split-by work --val-frac 0.15`, the
# same draw as before). The scanned books are evaluated on their edited text and on their real
# OCR; the passages on their edited text and their synthetic noisy twins.
#
# Usage: bench/clear_readability.sh [WORKDIR]
#   SEEDS="0 1 2" (default) and CONFIGS="lora-edited lora-noisy full-noisy" (default) choose
#   what is trained; SKIP_SETUP=1 reuses WORKDIR's lakehouse. About 25 minutes of set-up and
#   15-35 minutes per run on 2 cores: the defaults take about 4 hours.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$HERE/bench/out/clear}
SHARED=${CORPUS_SHARED_DATA:-$HERE/../shared/data}
SEEDS=${SEEDS:-0 1 2}
CONFIGS=${CONFIGS:-lora-edited lora-noisy full-noisy}
C="$HERE/.venv/bin/corpus"
PY="$HERE/.venv/bin/python"
export CORPUS_ROOT="$WORK/lakehouse" HF_HUB_OFFLINE=1
if [[ "${SKIP_SETUP:-0}" != 1 ]]; then
  rm -rf "$WORK" && mkdir -p "$WORK/share" && cd "$WORK"
  tar -xzf "$SHARED/legacy_share.tar.gz" -C share
  $C ingest share/legacy_share --workers 2 > ingest.log
  $C ocr --workers 2 > ocr.log
  $C mine --workers 2 > mine.log
  $C import "$SHARED/clear/clear_corpus.csv" --id ID --text Excerpt --title Title \
     --author Author --score bt_easiness=BT_easiness --id-prefix clear- > import.log
  $C noise --seed 0 > noise.log
  "$PY" "$HERE/bench/clear_holdout.py" "$SHARED/legacy_share.truth.json" > holdout.txt
  scanned=$(grep -v '^clear-' holdout.txt | paste -sd, -)
  common=(--tokenizer all-minilm-l6-v2 --seq-len 320 --window first --books "clear-*,$scanned"
          --split-by work --val-frac 0.15 --seed 0 --hold-out @holdout.txt)
  $C shards build --name clear "${common[@]}" --variants edited,ocr
  $C shards build --name clear-noisy "${common[@]}" --variants 'edited,ocr,noisy/*'
fi
cd "$WORK"

# name -> shards and training options (the backbone and head are the same for all)
declare -A OPTS=(
  [lora-edited]="--shards clear --epochs 3 --lora-r 16 --lr 1e-3"
  [lora-noisy]="--shards clear-noisy --epochs 2 --lora-r 16 --lr 1e-3"
  [full-noisy]="--shards clear-noisy --epochs 2 --full --lr 1e-4 --lr-decay 0.85"
)
report=()
for cfg in $CONFIGS; do
  runs=()
  for seed in $SEEDS; do
    run="clear-$cfg-s$seed"
    if [[ ! -f "runs/$run/result.json" ]]; then
      # shellcheck disable=SC2086
      /usr/bin/time -f "train $run: %e s" $C train ${OPTS[$cfg]} --seed "$seed" \
        --backbone all-minilm-l6-v2 --head attention --batch 8 --ckpt-every 100 --nproc 2 \
        --run-dir "runs/$run" > "train-$run.log" 2>> times.log
      $C eval "$run" --out "reports/$run" > "eval-$run.log"
    elif $C calibrate "$run" | tee -a calibrate.log | grep -q "output shifted"; then
      # trained before `corpus train` calibrated its models: its predictions were the old
      # model's
      $C eval "$run" --out "reports/$run" > "eval-$run.log"
    fi
    runs+=("$run")
  done
  joined=$(IFS=,; echo "${runs[*]}")
  report+=(--config "$cfg=$joined")
  if (( ${#runs[@]} > 1 )); then  # the seeds of one configuration averaged
    $C eval "${runs[@]}" --out "reports/$cfg-ensemble" --format json > "eval-$cfg-ensemble.json"
    ens=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' \
          "eval-$cfg-ensemble.json")
    report+=(--ensemble "$cfg x${#runs[@]} seeds=$ens")
  fi
done
best=$(IFS=,; echo "clear-${CONFIGS##* }-s${SEEDS%% *}")
"$PY" "$HERE/bench/clear_report.py" --root "$CORPUS_ROOT" --dataset clear "${report[@]}" \
  --books "$best" --out r1.json | tee r1.md
