#!/usr/bin/env bash
# GPU check in one command: the network's ceiling and the whole pipeline, fp32 and mixed
# precision, batch 8/16/32, on 512² images; writes docs/PERFORMANCE_GPU.md (+ .json).
#
#   bash bench/gpu.sh                 # a machine with a CUDA GPU and pip access (~5 min)
#   bash bench/gpu.sh --keras-only    # a GPU machine without TensorFlow (JAX/PyTorch only)
#
# Full mode installs the locked dependencies with the CUDA build of TensorFlow into
# .venv-gpu (as deploy/Dockerfile does), then measures with TensorFlow:
#   1. the ceiling: bench.gpu_ceiling (uint8 in, ids + confidence out, on the device);
#   2. the pipeline: python -m pipeline.run on 512 generated 512² images, end-to-end wall
#      time with process start, --batch_size 8/16/32, with and without --mixed_precision.
# --keras-only skips TensorFlow and the pipeline: it needs bench/gpu_inputs/ made on any
# machine with TensorFlow (python -m bench.gpu_ceiling prepare --out bench/gpu_inputs) and
# Keras installed beside JAX or PyTorch; it measures the same network under each backend
# that imports. That is how the table in docs/PERFORMANCE_GPU.md was made (see that file).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-full}"
OUT_DIR="${GPU_BENCH_OUT:-/tmp/deconvseg-gpu}"
DOC=docs/PERFORMANCE_GPU.md
mkdir -p "$OUT_DIR"
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
  echo "bench/gpu.sh: no NVIDIA GPU visible (nvidia-smi failed); run it on a CUDA machine" >&2
  exit 2
}

if [ "$MODE" = "--keras-only" ]; then
  PY="${PYTHON:-python3}"
  test -f bench/gpu_inputs/weights.npz || {
    echo "bench/gpu.sh: bench/gpu_inputs/ is missing; make it where TensorFlow is installed:" \
      "python -m bench.gpu_ceiling prepare --out bench/gpu_inputs" >&2
    exit 2
  }
  CELLS=()
  for backend in jax torch; do
    if KERAS_BACKEND=$backend "$PY" -c "import keras" 2>/dev/null; then
      # JAX compiles the step with XLA (jit); PyTorch runs it eagerly (torch.compile is minutes).
      KERAS_BACKEND=$backend timeout 240 "$PY" -m bench.gpu_ceiling measure --inputs bench/gpu_inputs \
        --out "$OUT_DIR/cells_$backend.json" --sizes 512,1024 --batches 8,16,32 --min_seconds 0.75 --resident \
        && CELLS+=("$OUT_DIR/cells_$backend.json") || echo "backend $backend failed" >&2
    fi
  done
  test "${#CELLS[@]}" -gt 0 || { echo "bench/gpu.sh: no Keras backend ran" >&2; exit 1; }
  "$PY" -m bench.gpu_ceiling table "${CELLS[@]}" --out "$OUT_DIR/PERFORMANCE_GPU.md"
  exit 0
fi

# Full mode: TensorFlow with CUDA, the pipeline included.
if [ ! -x .venv-gpu/bin/python ]; then
  python3 -m venv .venv-gpu
  TF_VERSION="$(grep -iE '^tensorflow[-_]cpu==' requirements.lock | cut -d= -f3)"
  grep -viE '^tensorflow[-_]cpu==' requirements.lock >"$OUT_DIR/requirements.gpu.txt"
  .venv-gpu/bin/pip install -q -r "$OUT_DIR/requirements.gpu.txt"
  .venv-gpu/bin/pip install -q --no-deps "tensorflow-cpu==${TF_VERSION}"
  .venv-gpu/bin/pip install -q "tensorflow[and-cuda]==${TF_VERSION}"
  .venv-gpu/bin/pip install -q --no-deps -e .
fi
PY=.venv-gpu/bin/python
"$PY" -c "import tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); assert gpus, 'TensorFlow sees no GPU'; print('TensorFlow', tf.__version__, gpus)"

"$PY" -m bench.gpu_ceiling prepare --out "$OUT_DIR/inputs"
KERAS_BACKEND=tensorflow "$PY" -m bench.gpu_ceiling measure --inputs "$OUT_DIR/inputs" \
  --out "$OUT_DIR/cells_tensorflow.json" --sizes 512,1024 --batches 8,16,32 --min_seconds 0.75 --resident
KERAS_BACKEND=tensorflow "$PY" -m bench.gpu_ceiling measure --inputs "$OUT_DIR/inputs" --jit_compile true \
  --out "$OUT_DIR/cells_tensorflow_xla.json" --sizes 512 --batches 16,32 --min_seconds 1.5

# The pipeline end to end (process start included) on the same model, per batch size and precision.
"$PY" -c "from bench.workload import make_set; make_set('$OUT_DIR/work', 512, 512)"
{
  echo
  echo "### Pipeline end to end, 512 images of 512², DirectRunner in-process"
  echo
  echo "| --batch_size | precision | wall s (process start included) | images/s |"
  echo "|---:|---|---:|---:|"
  for batch in 8 16 32; do
    for precision in "" --mixed_precision; do
      rm -rf "$OUT_DIR/run"
      started=$(date +%s.%N)
      "$PY" -m pipeline.run --input "$OUT_DIR/work/images/*.png" --output "$OUT_DIR/run" --batch_size "$batch" \
        $precision >"$OUT_DIR/run.log" 2>&1
      ended=$(date +%s.%N)
      "$PY" -c "w = $ended - $started; print(f'| $batch | ${precision:-float32} | {w:.1f} | {512 / w:.1f} |')"
    done
  done
} >"$OUT_DIR/pipeline.md"
"$PY" -m bench.gpu_ceiling table "$OUT_DIR/cells_tensorflow.json" "$OUT_DIR/cells_tensorflow_xla.json" \
  --out "$OUT_DIR/PERFORMANCE_GPU.md"
cat "$OUT_DIR/pipeline.md" >>"$OUT_DIR/PERFORMANCE_GPU.md"
echo "measured tables: $OUT_DIR/PERFORMANCE_GPU.md (copy the sections you keep into $DOC)"
