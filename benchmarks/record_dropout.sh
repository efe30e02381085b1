#!/usr/bin/env bash
# Does LoRA dropout 0.05 help? Records benchmarks/dropout_arithmetic.csv (docs/benchmarks.md), about 30 min on
# one CPU core; resumes where it stopped:
#   bash benchmarks/record_dropout.sh
# Two of grid 2's best configurations (hparams_search=grid_arithmetic, whose own runs use dropout 0), each at
# lora.dropout 0 and 0.05 with seeds 42, 43 and 44, everything else as in experiment/grid_arithmetic_task.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
k=0
for config in "3e-4 3" "1e-3 1"; do
  read -r lr epochs <<<"$config"
  k=$((k + 1))
  "$PYTHON" -m src.train -m hparams_search=grid_arithmetic hydra.sweeper.study_name="dropout_arithmetic_$k" \
    optim.learning_rate="$lr" optim.num_train_epochs="$epochs" optim.warmup_ratio=0.05 \
    'lora.dropout=choice(0.0, 0.05)' 'seed=choice(42, 43, 44)'
done
"$PYTHON" -m sweep.curves outputs/sweeps/dropout_arithmetic_* -o benchmarks/dropout_arithmetic.csv
