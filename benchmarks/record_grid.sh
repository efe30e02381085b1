#!/usr/bin/env bash
# Records the grid behind docs/sweeps.md (hours on a 2-core CPU; every step resumes where it stopped):
#   bash benchmarks/record_grid.sh
# 1. the noise floor: 3 configurations, each with seeds 43 and 44 (seed 42 is the grid's own run);
# 2. the grid itself: 6 learning rates x 4 ranks x epochs {1, 3};
# 3. every finished trial's curve into benchmarks/grid_default.csv.
# On a machine that has only the committed CSV, its finished trials are restored into fresh studies first
# (python -m sweep.curves --restore), so only the missing grid points run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CSV=benchmarks/grid_default.csv
sweep() {  # the overrides of one grid study: restore what the CSV holds, then run the rest
  if [ -f "$CSV" ]; then "$PYTHON" -m sweep.curves --restore "$CSV" hparams_search=grid_default "$@"; fi
  "$PYTHON" -m src.train -m hparams_search=grid_default "$@"
}
k=0
for config in "4e-4 16 3" "1.6e-4 32 3" "1e-3 8 1"; do
  read -r lr r epochs <<<"$config"
  k=$((k + 1))
  sweep hydra.sweeper.study_name="grid_default_seeds_$k" optim.learning_rate="$lr" lora.r="$r" \
    optim.num_train_epochs="$epochs" '+hydra.sweeper.params.seed="choice(43, 44)"'
done
sweep
"$PYTHON" -m sweep.curves outputs/sweeps/grid_default outputs/sweeps/grid_default_seeds_* -o "$CSV" --keep "$CSV"
