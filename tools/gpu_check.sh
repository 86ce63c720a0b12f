#!/usr/bin/env bash
# roadflax on a machine with an NVIDIA GPU, in one go (about 5 minutes; each
# step is capped, 560 s in all; an install, when needed, comes on top):
#   1. JAX's CUDA 13 build (jax[cuda13]==0.10.2) into the project's venv,
#      .venv (made with `pip install -e .` if missing), unless JAX there
#      already sees a GPU;
#   2. nvidia-smi, the JAX packages and jax.devices();
#   3. the model benchmark (float32 and bfloat16, FLOPs and MFU; Keras on
#      the CPU as the reference);
#   4. the pipeline benchmark on 6,000 generated frames;
#   5. the demo (configs/synthetic.py), profiling 5 train steps per stage.
# Everything printed goes to the console and to OUT/gpu_check.log; OUT
# ($OUT if set, else ./gpu_check_out) also gets model_benchmark.{md,json},
# pipeline_benchmark.{md,json}, demo_report.md and demo_classify.xplane.pb
# (the demo's classify profile, for TensorBoard's Profile tab). A step that
# fails or runs out of time says so and the others still run; the script
# exits 1 if any failed.
#
#   tools/gpu_check.sh

set -u -o pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu_check_out}
scratch=${TMPDIR:-/tmp}/roadflax_gpu_check
mkdir -p "$out" "$scratch"
log=$out/gpu_check.log
: >"$log"
failed=""

# step NAME SECONDS COMMAND...: COMMAND, stopped after SECONDS; its output to
# the console and the log, and a line if it failed.
step() {
  local name=$1 seconds=$2 status
  shift 2
  echo "=== $name ($(date +%T), at most ${seconds} s): $*" | tee -a "$log"
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && status="$status, out of time"
    echo "=== $name FAILED (exit $status)" | tee -a "$log"
    failed="$failed $name"
  fi
}

if [ ! -x .venv/bin/python ]; then
  step venv 300 bash -c 'python3 -m venv .venv && .venv/bin/pip install -q -e .'
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
if ! python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' \
  >/dev/null 2>&1; then
  step install_jax_cuda 300 pip install -q "jax[cuda13]==0.10.2"
fi

step nvidia_smi 20 nvidia-smi
step jax_devices 60 bash -c 'pip list 2>/dev/null | grep -iE "^(jax|nvidia)";
  python -c "import jax; print(jax.default_backend(), jax.devices())"'
step model_benchmark 180 python -m roadflax.benchmark --suite=model \
  --workdir="$out"
step pipeline_benchmark 120 python -m roadflax.benchmark --suite=pipeline \
  --images=6000 --workdir="$scratch/bench"
cp "$scratch"/bench/pipeline_benchmark.* "$out"/ 2>/dev/null
rm -rf "$scratch/demo"
step demo 180 python main.py --config=configs/synthetic.py \
  --workdir="$scratch/demo" --config.profile_steps=5
cp "$scratch/demo/classify/report.md" "$out/demo_report.md" 2>/dev/null
trace=$(find "$scratch/demo/classify/plugins/profile" -name '*.xplane.pb' \
  2>/dev/null | head -n 1)
[ -n "$trace" ] && cp "$trace" "$out/demo_classify.xplane.pb"

if [ -n "$failed" ]; then
  echo "=== failed:$failed (see $log)" | tee -a "$log"
  exit 1
fi
echo "=== all steps passed; results in $out" | tee -a "$log"
