#!/usr/bin/env bash
# Every GPU measurement of the project in one call (under 8 minutes on one H100/H200), for a lent
# device machine. Figures and logs go under $OUT (default ./gpu-out); copy what it prints into
# bench/RESULTS.md, "GPU figures", with the date and the nvidia-smi name.
#
#   bash bench/gpu.sh                    # on the GPU machine, from the repository root
#
# The device image has torch, transformers, sentence-transformers, accelerate, safetensors and
# pytest, but not pydantic or datasets. Carry them as wheels (made here, where pip works):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       pydantic datasets dill multiprocess
#
# and name `.whl` in the call's carry; this script installs them into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
start=$SECONDS
step() {  # step NAME SECONDS COMMAND...: one measurement, its own time limit, its log under $OUT
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s, at $((SECONDS - start))s)"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.txt"
    echo "== $name: exit $rc"
}
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} | tee "$OUT/machine.txt"
# Throughput and MFU vs sentence-transformers at EmbeddingGemma-300m's shape, bf16 (targets: >= 1.3x
# ST tokens/s, >= 35 % MFU); then compiled; then the shipped recipe's shape with GradCache both sides.
step trainer 150 $PY bench/trainer.py --repeats 2
step trainer_compile 150 $PY bench/trainer.py --repeats 1 --compile
step trainer_gradcache 120 $PY bench/trainer.py --batch 128 --seq 512 --mini-batch-size 32 --steps 10 --repeats 1
# The cached (GradCache) loss on CUDA in bf16 equals the full batch's.
step cached_loss_cuda 60 $PY -m pytest -q -p no:cacheprovider tests/trainers/test_cached_loss.py -k cuda
echo "total $((SECONDS - start)) s; logs in $OUT"
