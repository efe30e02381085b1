#!/usr/bin/env bash
# Records benchmarks/grid_arithmetic.csv, the second grid behind docs/sweeps.md (task 2, arithmetic), on CPU
# (about 2 hours on one core of a 2-core CPU; every step resumes where it stopped, also on a machine that has
# only the CSV):
#   bash benchmarks/record_grid_arithmetic.sh
# 1. the grid: 6 learning rates x warmup {0, 0.05, 0.15} x epochs {1, 3} at r16 (36 trials);
# 2. the noise floor: 3 configurations, each with seeds 43 and 44 (seed 42 is the grid's own run);
# 3. the second rank: r32 at warmup 0.05, 6 learning rates x epochs {1, 3} (12 trials);
# after each study, every finished trial's curve goes into the CSV (so it grows as the recording runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CSV=benchmarks/grid_arithmetic.csv
export_csv() {
  "$PYTHON" -m sweep.curves outputs/sweeps/grid_arithmetic* -o "$CSV" $([ -f "$CSV" ] && echo --keep "$CSV")
}
sweep() {  # the overrides of one grid study: restore what the CSV holds, then run the rest
  if [ -f "$CSV" ]; then "$PYTHON" -m sweep.curves --restore "$CSV" hparams_search=grid_arithmetic "$@"; fi
  "$PYTHON" -m src.train -m hparams_search=grid_arithmetic "$@"
  export_csv
}
sweep
k=0
for config in "1e-3 3" "3e-4 3" "3e-3 1"; do
  read -r lr epochs <<<"$config"
  k=$((k + 1))
  sweep hydra.sweeper.study_name="grid_arithmetic_seeds_$k" optim.learning_rate="$lr" optim.warmup_ratio=0.05 \
    optim.num_train_epochs="$epochs" '+hydra.sweeper.params.seed="choice(43, 44)"'
done
sweep hydra.sweeper.study_name=grid_arithmetic_r32 lora.r=32 optim.warmup_ratio=0.05
