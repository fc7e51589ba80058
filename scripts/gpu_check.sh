#!/usr/bin/env bash
# GPU check: the GPU benchmarks and a short real search, in under 10 minutes, on a machine with
# an NVIDIA GPU. Results go to scripts/bench/results/gpu_*.json. On a machine without one it
# says so and exits 0.
#
#   scripts/gpu_check.sh                     # uses .venv/bin/python if present, else python3
#   PYTHON=/path/to/python scripts/gpu_check.sh
#   PYTHONPATH=/path/to/unpacked/wheels scripts/gpu_check.sh   # Ray/Optuna from unpacked wheels
#
# Steps (each with its own time limit; a failed step is reported and the next one runs):
#   1. train_throughput.py on CUDA: naive fp32 loop vs cxr_tune's loop, 3 architectures at the
#      paper's settings, with the projected time of the paper's grid on Dataset 1 sizes;
#   2. data_plane.py: cache vs ImageFolder+PIL on this machine's CPUs (needs tqdm);
#   3. a short real search (smoke space, gpu profile, 4 trials), where Ray and Optuna import;
#   4. the GPU unit tests (pytest -m gpu), where pytest is installed;
#   5. train_throughput.py for ResNet50 with torch.compile.
# Limits add up to 9.5 minutes. A step that cannot run says why and how to make it run.
# The exit status is 1 if a step that could run failed, else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
RESULTS="$REPO/scripts/bench/results"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! command -v nvidia-smi >/dev/null 2>&1 \
  || ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no NVIDIA GPU visible to PyTorch on this machine; nothing to check."
  exit 0
fi

mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
failed=()
started=$SECONDS

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record a failure
  local name=$1 limit=$2
  shift 2
  echo
  echo "== $name (limit ${limit}s) =="
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "-- $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

summarise_search() {  # summarise_search EXPERIMENT_DIR WALL_S OUTPUT: per-trial figures as JSON
  "$PYTHON" - "$@" <<'EOF'
import json, os, sys, time
from pathlib import Path

folder, wall, output = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
trials = []
for path in sorted(folder.glob("*/result.json")):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rows:
        last = rows[-1]
        trials.append({
            "trial": path.parent.name,
            "epochs": len(rows),
            "status": last.get("status"),
            "val_macro_f1": last.get("val_macro_f1"),
            "device": last.get("device"),
            "compiled": last.get("compiled"),
            "train_images_per_s": [r.get("train_images_per_s") for r in rows],
            "epoch_time_s": [r.get("epoch_time_s") for r in rows],
        })
result = {
    "benchmark": "gpu_search",
    "command": "python -m cxr_tune.search --space smoke --profile gpu --num-samples 4",
    "wall_s": wall,
    "trials": trials,
    "load_average": list(os.getloadavg()),
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
}
output.write_text(json.dumps(result, indent=2) + "\n")
print(f"{len(trials)} trials in {wall:.0f} s; wrote {output}")
if not trials:
    sys.exit("no trial results found under " + str(folder))
EOF
}

missing_modules() {  # missing_modules NAME...: the ones $PYTHON cannot import
  "$PYTHON" -c 'import importlib.util, sys
print(" ".join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))' "$@"
}

how_to_provide() {  # how_to_provide MODULES: where to get what is missing, without internet here
  local version
  version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  echo "   $PYTHON cannot import: $1. On a machine with internet, fetch wheels for Python $version:"
  echo "     pip download 'ray[tune]==2.60.0' 'optuna==5.0.0' pyyaml tqdm tensorboardX openpyxl \\"
  echo "       --only-binary=:all: --python-version $version --platform manylinux2014_x86_64 -d wheels"
  echo "   unpack them here, leaving out what this machine already has (numpy, pandas, torch):"
  echo "     for w in wheels/*.whl; do case \$w in *numpy*|*pandas*|*torch*) ;; *) python -m zipfile -e \"\$w\" deps ;; esac; done"
  echo "   and run again with: PYTHONPATH=\$PWD/deps scripts/gpu_check.sh"
}

skip() {  # skip NAME REASON
  echo
  echo "== $1: skipped ($2) =="
}

step "training throughput" 120 "$PYTHON" scripts/bench/train_throughput.py --device cuda \
  --output "$RESULTS/gpu_train_throughput.json"

missing=$(missing_modules tqdm)
if [ -z "$missing" ]; then
  step "data plane" 90 "$PYTHON" scripts/bench/data_plane.py \
    --output "$RESULTS/gpu_data_plane.json"
else
  skip "data plane" "the cache needs $missing"
  how_to_provide "$missing"
fi

missing=$(missing_modules ray optuna yaml tqdm tensorboardX openpyxl)
if [ -z "$missing" ]; then
  storage=$(mktemp -d)
  t0=$SECONDS
  step "short search" 120 "$PYTHON" -m cxr_tune.search --space smoke --profile gpu \
    --num-samples 4 --storage "$storage" --name gpu-check
  summarise_search "$storage/gpu-check" "$((SECONDS - t0))" "$RESULTS/gpu_search.json" \
    || failed+=("search summary")
else
  skip "short search" "Ray, Optuna and the search's other packages are needed"
  how_to_provide "$missing"
fi

if [ -z "$(missing_modules pytest)" ]; then
  step "GPU unit tests" 90 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider \
    tests/test_engine.py tests/bench/test_benchmarks.py
else
  skip "GPU unit tests" "pytest is not installed for $PYTHON"
fi

# Last: compilation takes the longest and needs a working compiler toolchain (Triton).
# Evaluation batches of a whole eval_batch_size (4096 = 8 x 512) compile one shape only.
step "training throughput, compiled" 150 "$PYTHON" scripts/bench/train_throughput.py \
  --device cuda --archs resnet50 --compile --eval-images 4096 \
  --output "$RESULTS/gpu_train_throughput_compile.json"

echo
echo "gpu_check: $((SECONDS - started)) s; results in $RESULTS/gpu_*.json"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'gpu_check: failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "gpu_check: every step that could run passed."
