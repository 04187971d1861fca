#!/usr/bin/env bash
# Reproduce every figure of BENCHMARKS.md. Each script prints its numbers;
# this wrapper records the machine and date beside them in benchmarks/results/.
# Usage: bash benchmarks/run_all.sh [PATH_TO_SHARED_DATA]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
python=${PYTHON:-python}
out=benchmarks/results
mkdir -p "$out"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(uname -m), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
  "$python" -c "import platform, numpy, tensorflow, brian2; print('python', platform.python_version(), 'numpy', numpy.__version__, 'tensorflow', tensorflow.__version__, 'brian2', brian2.__version__)"
} > "$out/machine.txt"
run() {
  local name=$1
  shift
  echo "== $name: $*"
  "$python" "$@" 2>&1 | grep -v -E '^(I0000|W0000|WARNING: All log|To enable)' | tee "$out/$name.txt"
}
run training benchmarks/bench_training.py --repeats 10
run accuracy benchmarks/bench_accuracy.py --data "$data/mnist" --epochs 5 --json "$out/accuracy.json"
run brian2 benchmarks/bench_brian2.py
run pcm benchmarks/bench_pcm.py
run precision examples/limited_precision.py --data "$data/mnist" --json "$out/precision.json"
run jsb examples/jsb_music.py --data "$data/jsb_chorales.json.gz"
run pipeline_quick -m snubridge pipeline --quick --restart --out "$out/pipeline-quick"
run pytest_slow -m pytest -m slow -q
