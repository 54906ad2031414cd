#!/usr/bin/env bash
# Reading level on CLEAR (BENCHMARKS.md, "R1"): the whole pipeline on the development share
# (for real OCR patterns to mine) and the CLEAR excerpts (labelled passages), then two
# trainings of all-MiniLM-L6-v2 + LoRA r=16 + attention pooling under torchrun (2 gloo ranks):
# one on edited text only, one on edited text and its mined noisy variants; each evaluated on
# the held-out source volumes, on edited and on noisy text, against readability formulas.
# About 45 minutes on 2 cores. Usage: bench/clear_readability.sh [WORKDIR]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$HERE/bench/out/clear}
SHARED=${CORPUS_SHARED_DATA:-$HERE/../shared/data}
C="$HERE/.venv/bin/corpus"
export CORPUS_ROOT="$WORK/lakehouse" HF_HUB_OFFLINE=1
rm -rf "$WORK" && mkdir -p "$WORK/share" && cd "$WORK"
tar -xzf "$SHARED/legacy_share.tar.gz" -C share
$C ingest share/legacy_share --workers 2 > ingest.log
$C ocr --workers 2 > ocr.log
$C mine --workers 2 > mine.log
$C import "$SHARED/clear/clear_corpus.csv" --id ID --text Excerpt --title Title \
   --author Author --score bt_easiness=BT_easiness --id-prefix clear- > import.log
$C noise --seed 0 > noise.log
# held out by source volume (same author and title), the same 15% of works in both datasets
common=(--tokenizer all-minilm-l6-v2 --seq-len 320 --window first --books 'clear-*'
        --split-by work --val-frac 0.15 --seed 0)
$C shards build --name clear "${common[@]}" --variants edited
$C shards build --name clear-noisy "${common[@]}" --variants 'edited,noisy/*'
train=(--backbone all-minilm-l6-v2 --head attention --lora-r 16 --batch 8 --lr 1e-3
       --ckpt-every 100 --nproc 2)
/usr/bin/time -f "train clear: %e s" $C train --shards clear --epochs 3 "${train[@]}" \
   --run-dir runs/clear-minilm-r16 > train-clear.log
/usr/bin/time -f "train clear-noisy: %e s" $C train --shards clear-noisy --epochs 2 \
   "${train[@]}" --run-dir runs/clear-noisy-minilm-r16 > train-clear-noisy.log
$C eval clear-minilm-r16 --out reports/clear-minilm-r16
$C eval clear-noisy-minilm-r16 --out reports/clear-noisy-minilm-r16
