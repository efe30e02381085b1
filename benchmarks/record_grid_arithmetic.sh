#!/usr/bin/env bash
# Records benchmarks/grid_arithmetic.csv, the second grid behind docs/sweeps.md (task 2, arithmetic), on CPU
# (about 3 hours on one core of a 2-core CPU; SEED_JOBS=2 runs the seed studies two at a time: its last 20 seed
# runs took 26 min; every step resumes where it stopped, also on a machine that has only the CSV):
#   bash benchmarks/record_grid_arithmetic.sh            # or SEED_JOBS=2 bash benchmarks/record_grid_arithmetic.sh
# 1. the grid: 6 learning rates x warmup {0, 0.05, 0.15} x epochs {1, 3} at r16 (36 trials);
# 2. the second rank: r32 at warmup 0.05, 6 learning rates x epochs {1, 3} (12 trials);
# 3. seeds 43 and 44 (seed 42 is the grid's own run) of every configuration whose seed-42 best eval loss lies
#    within 0.05 of the grid's best (about 3 median seed spreads: the configurations a sweep's result is decided
#    among), plus 3e-3/1 epoch (the first noise-floor probe). The replay takes a configuration's mean curve
#    over its seeds as its grid point, and the seeds' spread as the noise floor.
# After each study, every finished trial's curve goes into the CSV (so it grows as the recording runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SEED_JOBS=${SEED_JOBS:-1}
CSV=benchmarks/grid_arithmetic.csv
if [ "$SEED_JOBS" -gt 1 ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi  # one core per job
export_csv() {  # one export at a time (seed studies may run in parallel)
  mkdir -p outputs
  flock outputs/grid_arithmetic.lock "$PYTHON" -m sweep.curves outputs/sweeps/grid_arithmetic* -o "$CSV" \
    $([ -f "$CSV" ] && echo --keep "$CSV")
}
sweep() {  # the overrides of one grid study: restore what the CSV holds, then run the rest
  if [ -f "$CSV" ]; then "$PYTHON" -m sweep.curves --restore "$CSV" hparams_search=grid_arithmetic "$@"; fi
  "$PYTHON" -m src.train -m hparams_search=grid_arithmetic "$@"
  export_csv
}
sweep
sweep hydra.sweeper.study_name=grid_arithmetic_r32 lora.r=32 optim.warmup_ratio=0.05
# study number, learning rate, epochs, warmup, rank (the numbers are the studies' names and r16 is the
# grid's own rank, not an override: keep both, or a study recorded before refuses to resume)
SEEDED=(
  "1 1e-3 3 0.05 16" "2 3e-4 3 0.05 16" "3 3e-3 1 0.05 16" "4 1e-3 3 0.15 16"
  "5 1e-3 3 0.0 16" "6 3e-4 3 0.0 16" "7 3e-4 3 0.15 16" "8 3e-3 3 0.05 16"
  "9 1e-3 1 0.0 16" "10 1e-3 1 0.05 16" "11 1e-3 1 0.15 16"
  "12 1e-3 3 0.05 32" "13 3e-4 3 0.05 32" "14 1e-3 1 0.05 32"
)
for config in "${SEEDED[@]}"; do
  read -r k lr epochs warmup r <<<"$config"
  while [ "$(jobs -rp | wc -l)" -ge "$SEED_JOBS" ]; do wait -n; done
  sweep hydra.sweeper.study_name="grid_arithmetic_seeds_$k" optim.learning_rate="$lr" optim.num_train_epochs="$epochs" \
    optim.warmup_ratio="$warmup" $([ "$r" = 16 ] || echo lora.r="$r") '+hydra.sweeper.params.seed="choice(43, 44)"' &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n; done  # a failed study fails the recording
