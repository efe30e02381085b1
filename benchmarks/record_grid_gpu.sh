#!/usr/bin/env bash
# Records benchmarks/grid_gpu.csv, the grid behind docs/sweeps.md, on one GPU in about 5 minutes (H200):
#   bash benchmarks/record_grid_gpu.sh
# The grid of hparams_search=grid_default with epochs {1, 2, 3}: 6 learning rates x 4 ranks x 3 epochs = 72
# configurations, plus seeds 43 and 44 of three of them (the noise floor). It runs as 9 independent studies
# side by side (one per learning rate, one per repeated configuration), each with its own SQLite file, so no
# two processes share a storage; each study resumes where it stopped when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 9 processes share the CPU cores that feed the GPU
epochs='optim.num_train_epochs=choice(1,2,3)'
k=0
pids=()
for lr in 1e-5 2.5e-5 6.3e-5 1.6e-4 4e-4 1e-3; do
  k=$((k + 1))
  "$PYTHON" -m src.train -m hparams_search=grid_default hydra.sweeper.study_name="grid_gpu_lr$k" \
    "$epochs" optim.learning_rate="$lr" > "outputs/grid_gpu_lr$k.log" 2>&1 &
  pids+=($!)
  [ "$k" = 1 ] && sleep 40  # the first converts the model and tokenizes the data once; the rest reuse them
done
k=0
for config in "4e-4 16 3" "1.6e-4 32 3" "1e-3 8 1"; do
  read -r lr r epochs <<<"$config"
  k=$((k + 1))
  "$PYTHON" -m src.train -m hparams_search=grid_default hydra.sweeper.study_name="grid_gpu_seeds_$k" \
    optim.learning_rate="$lr" lora.r="$r" optim.num_train_epochs="$epochs" \
    '+hydra.sweeper.params.seed="choice(43, 44)"' > "outputs/grid_gpu_seeds_$k.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$PYTHON" -m sweep.curves outputs/sweeps/grid_gpu_lr* outputs/sweeps/grid_gpu_seeds_* -o benchmarks/grid_gpu.csv
