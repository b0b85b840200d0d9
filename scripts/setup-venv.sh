#!/usr/bin/env bash
# Creates the virtual environment and installs the project with its test extras.
# torch is pinned to the CPU build first: an unpinned `torch` would pull a multi-GB CUDA build.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
# torch pinned in the same command: the [transformers] extra's dependencies must not upgrade it
"$VENV/bin/python" -m pip install -q "torch==2.13.0" -e ".[test,transformers]"
"$VENV/bin/python" -c "import torch, torch_pruning; print('torch', torch.__version__, '| torch-pruning', torch_pruning.__version__ if hasattr(torch_pruning, '__version__') else '?')"
