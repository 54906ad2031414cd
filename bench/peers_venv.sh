#!/usr/bin/env bash
# A throwaway virtualenv with the P6 peers (MosaicML streaming, LitData), never the project's.
#
#   bash bench/peers_venv.sh /tmp/p6-peers     # a few minutes, ~2 GB
#   HF_HUB_OFFLINE=1 .venv/bin/python bench/loader.py --peers-python /tmp/p6-peers/bin/python
#
# torch is the CPU build the project uses (2.13.0, which pip takes from this machine's disk,
# /opt/wheels), installed first so that the peers' own "torch" requirement is already met
# and pip does not pull a multi-GB CUDA build. Versions: bench/peers-requirements.txt.
#
# Both peers require torchvision; PyPI's torchvision is a CUDA build that cannot load beside
# the CPU torch ("operator torchvision::nms does not exist"), so it is removed again here.
# Nothing the benchmark measures uses it: bench/loader_peers.py stubs the imports of
# streaming's (unused) vision datasets, and LitData then treats torchvision as absent.
set -euo pipefail
DIR=${1:?usage: peers_venv.sh DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
python3 -m venv "$DIR"
export PIP_FIND_LINKS=${PIP_FIND_LINKS:-/opt/wheels}
"$DIR/bin/pip" install --quiet --upgrade pip
"$DIR/bin/pip" install --quiet torch==2.13.0
"$DIR/bin/pip" install --quiet -r "$HERE/peers-requirements.txt"
"$DIR/bin/pip" uninstall --yes --quiet torchvision
"$DIR/bin/python" -c "import sys; sys.argv = ['x']; sys.path.insert(0, '$HERE')
import loader_peers; loader_peers.stub_torchvision()
import litdata, streaming, torch
print('peers venv ok: mosaicml-streaming', streaming.__version__, 'litdata', litdata.__version__,
      'torch', torch.__version__)"
