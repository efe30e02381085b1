#!/usr/bin/env bash
# Records the grid behind docs/sweeps.md (hours on a 2-core CPU; every step resumes where it stopped):
#   bash benchmarks/record_grid.sh            # then: python -m sweep.curves ... (see docs/sweeps.md)
# 1. the noise floor: 3 configurations, each with seeds 43 and 44 (seed 42 is the grid's own run);
# 2. the grid itself: 6 learning rates x 4 ranks x epochs {1, 3}.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
k=0
for config in "4e-4 16 3" "1.6e-4 32 3" "1e-3 8 1"; do
  read -r lr r epochs <<<"$config"
  k=$((k + 1))
  "$PYTHON" -m src.train -m hparams_search=grid_default hydra.sweeper.study_name="grid_default_seeds_$k" \
    optim.learning_rate="$lr" lora.r="$r" optim.num_train_epochs="$epochs" \
    '+hydra.sweeper.params.seed="choice(43, 44)"'
done
"$PYTHON" -m src.train -m hparams_search=grid_default
