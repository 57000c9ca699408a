#!/usr/bin/env bash
# Trains queue entries of benchmarks/reproduce_cifar.py on a GPU machine, several at once, within
# one time limit (TOTAL_S); running the same command again resumes them. Run from the repository
# root, with the data packed by device_data.py pack in .gpu/ (entries of one imbalance factor per
# pack; PACK=.gpu/cifar100_lt_if200.tar.xz for IF200's):
#
#   python benchmarks/device_data.py pack --out .gpu
#   OUT=<folder> RUNS="cifar100_lt_if100_la_s5 cifar100_lt_if100_ce_s5" TOTAL_S=540 \
#       bash benchmarks/gpu_queue.sh                                # OUT: folder the results are written to
#
# The run folders live in runs/ (ignored by git, so they stay between calls on the same machine);
# a call cut by TOTAL_S stops its runs with SIGINT, which checkpoints them, and the same call again
# resumes them. Written under $OUT: gpu.log, results/<run>/ and figures/ for every finished run (as
# the queue archives them: copy into docs/results and docs/figures), and runs.tar with each run
# folder's config, log and last.pt (to resume on another machine).
# Runs are made with CUDA graphs (compile_mode=reduce-overhead, a runtime key: the same setting as the
# CPU runs) and the packed data (data.verify=false; device_data.py checks it against the official
# data's digests as it unpacks).
# Rehearsal without a GPU: DEVICE_EXTRA="optim.epochs=1 data.limit_per_class=5 compile=false device=cpu".
set -u
OUT=${OUT:-/tmp/gpu_queue_out}
RUNS=${RUNS:?RUNS: the queue entries to train, as run folder names}
PARALLEL=${PARALLEL:-2}
TOTAL_S=${TOTAL_S:-540}
RUNS_DIR=${RUNS_DIR:-runs}
# the packed benchmark (device_data.py pack --imb-factor IF); its copy holds only that IF's images
PACK=${PACK:-.gpu/cifar100_lt_if100.tar.xz}
STEM=$(basename "$PACK" .tar.xz)
DATA=${DATA:-/tmp/longtail_data}/$STEM
DEVICE_EXTRA=${DEVICE_EXTRA:-}
for r in $RUNS; do
    case $r in
        "${STEM}"_*) ;;
        *) echo "gpu_queue.sh: $r is not a $STEM run; the packed copy holds only ${STEM}'s images" \
               "(pack its own with device_data.py pack --imb-factor, and set PACK)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu.log") 2>&1
PY=python3
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
START=$(date +%s)

stamp environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ -f "$DATA/.unpacked" ]; then
    stamp "data: already unpacked and checked in $DATA"
else
    stamp data
    $PY benchmarks/device_data.py unpack "$PACK" --to "$DATA" || exit 1
    touch "$DATA/.unpacked"
fi
# GPU load every 15 s, to see how well the runs share it
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 15 \
    > "$OUT/gpu_use.csv" 2>/dev/null &
SMI=$!

LEFT=$(( TOTAL_S - ($(date +%s) - START) ))
if [ "$LEFT" -lt 60 ]; then  # (timeout 0 would mean no limit at all)
    stamp "only $LEFT s left of TOTAL_S=$TOTAL_S after the data: nothing started"; kill "$SMI" 2>/dev/null; exit 3
fi
stamp "queue: $RUNS, $PARALLEL at a time, $LEFT s"
# SIGINT at the deadline checkpoints the runs; one that has not stopped 30 s later is killed (its
# last.pt is then the previous checkpoint)
# shellcheck disable=SC2086  # RUNS and DEVICE_EXTRA are lists
timeout -s INT -k 30 "$LEFT" $PY benchmarks/reproduce_cifar.py --out "$RUNS_DIR" --data-root "$DATA" \
    --parallel "$PARALLEL" --threads "$(nproc)" --only $RUNS \
    --extra eval.every=2 compile=true compile_mode=reduce-overhead data.verify=false $DEVICE_EXTRA \
    --runtime eval.batch_size=1000 --archive "$OUT/results" --figures "$OUT/figures"
echo "exit $?"
kill "$SMI" 2>/dev/null
rm -f "$OUT/runs.tar"  # a reused OUT: one copy of each run folder, this call's
for r in $RUNS; do
    [ -d "$RUNS_DIR/$r" ] && tar -C "$RUNS_DIR" --exclude=best.pt -rf "$OUT/runs.tar" "$r"
    [ -f "$RUNS_DIR/$r/metrics.jsonl" ] && echo "$r: $(wc -l < "$RUNS_DIR/$r/metrics.jsonl") lines in metrics.jsonl"
done
stamp done
