#!/usr/bin/env bash
# Creates the torch plugin environment (a venv of its own, never the portal's .venv) with the
# CPU build of torch 2.13.0 that lies on this machine's disk: pip finds it there, uv does not.
# Usage: tools/envs/torch_env.sh [DIR]   (default: $TORCH_ENV or var/envs/torch)
set -euo pipefail
dir="${1:-${TORCH_ENV:-var/envs/torch}}"
python="${PLUGIN_PYTHON:-python3.11}"
if "$dir/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "torch env: $dir already has torch 2.13.0"
  exit 0
fi
"$python" -m venv "$dir"
# Pinned: a version that is not on this disk would download a several-GB CUDA build.
"$dir/bin/pip" install --quiet --disable-pip-version-check 'torch==2.13.0'
"$dir/bin/python" -c 'import torch; print("torch env:", torch.__version__, "at", torch.__file__)'
