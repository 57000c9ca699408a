#!/usr/bin/env bash
# The GPU checks and timings, in one script with one overall time limit (TOTAL_S), run on a GPU
# machine from the repository root, with the data packed by device_data.py pack in .gpu/:
#
#   python benchmarks/device_data.py pack --out .gpu          # 52 MiB: the IF100 images only
#   OUT=<folder> bash benchmarks/gpu_benchmark.sh             # OUT: folder the results are written to
#
# 1. the tests that need a GPU (CUDA sync debug mode, resuming on cuda);
# 2. the SPEC section 5 GALA run (CIFAR-100-LT IF100, 200 epochs, AutoAugment, reference mode,
#    seed 0, the queue's eval.every=2) on cuda with CUDA graphs, timed (the target: under 3 minutes
#    of training time on one H100);
# 2b. 12 epochs of the same run with data.prefetch=true (the next batch augmented on a side stream);
# 3. benchmarks/train_step.py on cuda: the released code's path against ours;
# 4. the whole test suite, in what time is left (on a GPU machine, device=auto tests train there).
# Each step has its own time limit inside one deadline (TOTAL_S), so a slow or failing step leaves
# time for the next. Written under $OUT: gpu.log, the run folder (checkpoints left out), the
# benchmark's table and the suite's output.
# Rehearsal without a GPU: DEVICE=cpu STEPS=1 WARMUP=1 EXTRA="optim.epochs=1 data.limit_per_class=5 compile=false".
set -u
OUT=${OUT:-/tmp/gpu_benchmark_out}
DEVICE=${DEVICE:-cuda}
TOTAL_S=${TOTAL_S:-570}
RUN_S=${RUN_S:-330}
BENCH_S=${BENCH_S:-130}
TEST_S=${TEST_S:-60}
STEPS=${STEPS:-200}
WARMUP=${WARMUP:-20}
EXTRA=${EXTRA:-}
DATA=${DATA:-/tmp/longtail_data}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu.log") 2>&1
PY=python3
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
DEADLINE=$(( $(date +%s) + TOTAL_S ))
# the smaller of a step's own limit and what is left before the deadline
limit() { local left=$(( DEADLINE - $(date +%s) )); echo $(( $1 < left ? $1 : (left > 1 ? left : 1) )); }

stamp environment
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
$PY -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0], 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
nproc

stamp data
$PY benchmarks/device_data.py unpack .gpu/cifar100_lt_if100.tar.xz --to "$DATA" || exit 1

stamp "1. GPU tests (limit ${TEST_S} s)"
timeout -s INT "$(limit "$TEST_S")" $PY -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_sync_free.py tests/test_train.py
echo "exit $?"

stamp "2. 200-epoch GALA run (limit ${RUN_S} s)"
RUNS=/tmp/longtail_runs
NAME=gpu_cifar100_lt_if100_gala_reference_s0
# shellcheck disable=SC2086  # EXTRA is a list of overrides
timeout -s INT "$(limit "$RUN_S")" $PY -m longtail train configs/cifar100_lt_if100_gala_reference.yaml \
    data.root="$DATA" data.verify=false device="$DEVICE" compile=true compile_mode=reduce-overhead \
    eval.every=2 eval.batch_size=1000 progress=log out_dir="$RUNS" run_name="$NAME" $EXTRA
echo "exit $?"
tar -C "$RUNS" --exclude=last.pt -czf "$OUT/run_gala_s0.tar.gz" "$NAME" 2>/dev/null || true

stamp "2b. the same run's first epochs with data.prefetch=true (limit ${PREFETCH_S:-90} s): compare its epoch times with 2's"
# shellcheck disable=SC2086
timeout -s INT "$(limit "${PREFETCH_S:-90}")" $PY -m longtail train configs/cifar100_lt_if100_gala_reference.yaml \
    data.root="$DATA" data.verify=false device="$DEVICE" compile=true compile_mode=reduce-overhead \
    data.prefetch=true optim.epochs=12 eval.every=100 progress=log out_dir="$RUNS" run_name="${NAME}_prefetch" $EXTRA
echo "exit $?"
cp "$RUNS/${NAME}_prefetch/metrics.jsonl" "$OUT/metrics_prefetch.jsonl" 2>/dev/null || true

stamp "3. train_step.py (limit ${BENCH_S} s)"
timeout -s INT "$(limit "$BENCH_S")" $PY benchmarks/train_step.py --data-root "$DATA" --no-verify --device "$DEVICE" \
    --workers 8 --steps "$STEPS" --warmup "$WARMUP" --out "$OUT/train_step_gpu.txt"
echo "exit $?"
# the same-work check apart, so that a failing check cannot cost the timings above
timeout -s INT "$(limit 60)" $PY benchmarks/train_step.py --data-root "$DATA" --no-verify --device "$DEVICE" \
    --check --paths fp32 --steps 1 --warmup 1
echo "exit $?"

stamp "4. the whole suite (what is left: $(limit 600) s)"
# the real-data tests (CI runs them) error where the shared data folder is absent
timeout -s INT "$(limit 600)" $PY -m pytest -q -p no:cacheprovider -n 12 -rfEs tests > "$OUT/pytest_full.txt" 2>&1
echo "exit $?"; tail -30 "$OUT/pytest_full.txt"
stamp done
