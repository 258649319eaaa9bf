#!/bin/bash
# The CUDA tests and the GPU benchmarks of docs/lrp.md and docs/batch_stage.md in one timed script, run from the
# repository root on a GPU machine (used on an H200, 4 Dec 2026):
#   OUT=gpu-results bash benchmarks/gpu_checks.sh [DEADLINE_S] [STEPS]
# STEPS: a comma list of tests,eager,compile,bs_cuda,bs_cpu,modern,bs_tf32 (default: all, in this order).
# Each step gets the smaller of its own limit and the time left before DEADLINE_S (default 400). Logs go to
# $OUT/main.log and $OUT/cuda_tests.log, the JSON results to $OUT/res.tgz. With WHEELS=dir, the wheels there
# are installed first into /tmp/site (for a machine whose Python lacks spray's dependencies and has no index).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
DEADLINE=${1:-400}
STEPS=${2:-tests,eager,compile,bs_cuda,bs_cpu,modern,bs_tf32}
T0=$(date +%s)
R=$(mktemp -d)
mkdir -p "$R"
exec > >(tee -a "$OUT/main.log") 2>&1

left() { echo $((DEADLINE - ($(date +%s) - T0))); }
want() { [[ ",$STEPS," == *",$1,"* ]]; }
# step NAME BUDGET_S CMD...: runs CMD with the smaller of BUDGET_S and the time left, logs its rc and time.
step() {
    local name=$1 budget=$2 t
    shift 2
    t=$(left)
    ((t > budget)) && t=$budget
    if ((t < 15)); then echo "### $name: skipped (no time left)"; return; fi
    echo "### $name (limit ${t}s) at $(($(date +%s) - T0))s: $*"
    local s=$(date +%s)
    timeout "$t" "$@"
    echo "### $name rc=$? in $(($(date +%s) - s))s"
}

if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || { echo "wheel install failed"; exit 3; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi -L
nproc
python3 -c "import torch, torchvision, numpy, sklearn, scipy, pandas, pydantic, PIL, zennit, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'tv', torchvision.__version__, 'numpy', numpy.__version__, 'sklearn', sklearn.__version__, 'scipy', scipy.__version__, 'pandas', pandas.__version__, 'pydantic', pydantic.__version__, 'PIL', PIL.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

if want tests; then
    step tests 200 python3 -m pytest -q -s -p no:cacheprovider -o addopts= -ra --junitxml="$R/cuda_junit.xml" \
        tests/test_cuda.py tests/test_cuda_decode.py \
        "tests/test_correct_run.py::test_rrclarc_on_the_gpu_matches_the_cpu" 2>&1 | tee "$OUT/cuda_tests.log"
fi
LRP="python3 benchmarks/lrp_throughput.py --device cuda --batch 64 --repeats 5"
BS="python3 benchmarks/batch_stage.py --device cuda --n 4096 --batch 128 --workers 12"
want eager && step eager 90 $LRP --models resnet50 vgg16 --elementwise eager --json "$R/lrp_eager_fp32.json"
want compile && step compile 100 $LRP --models resnet50 vgg16 --elementwise compile --json "$R/lrp_compile_fp32.json"
want bs_cuda && step bs_cuda 60 $BS --precision fp32 --decode-device cuda --json "$R/bs_fp32_cuda.json"
want bs_cpu && step bs_cpu 60 $BS --precision fp32 --decode-device cpu --json "$R/bs_fp32_cpu.json"
want modern && step modern 100 $LRP --models vit_b_16 efficientnet_b0 convnext_tiny mobilenet_v3_large \
    --json "$R/lrp_modern_fp32.json"
want bs_tf32 && step bs_tf32 60 $BS --precision tf32 --decode-device cuda --json "$R/bs_tf32_cuda.json"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$R/nvidia_smi.csv" 2>&1
lscpu > "$R/lscpu.txt" 2>&1
tar czf "$OUT/res.tgz" -C "$R" .
echo "### all done at $(($(date +%s) - T0))s"
