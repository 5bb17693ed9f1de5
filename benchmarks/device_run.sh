#!/usr/bin/env bash
# One run on a lent GPU machine: the verifier's CUDA tests and benchmarks/cuda_engine.py, results into $OUT.
#
# That machine has its own Python with torch and no package index: the wheels it lacks (PuLP, highspy) travel
# in .whl/, the VNN-COMP files the run reads in .devdata/ (a copy of the data root's vnncomp2021 folders), both
# ignored by git. Prepare them here, then run this script there with `carry: [".whl", ".devdata"]`:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .whl highspy==1.16.0 pulp==3.3.2
#   mkdir -p .devdata/vnncomp2021 && cp -r ../shared/data/vnncomp2021/{mnistfc,results} .devdata/vnncomp2021/
#   (and marabou-cifar10's cifar10_small.onnx with its unsat instance's .vnnlib)
# Usage there: COMMIT=<short hash> BUDGET=400 bash benchmarks/device_run.sh
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export NEUROSPEC_DATA=$PWD/.devdata NEUROSPEC_RESULTS=$OUT NEUROSPEC_COMMIT=${COMMIT:-} PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'numpy', numpy.__version__)" \
    | tee "$OUT/versions.txt"
timeout "${TEST_SECONDS:-120}" "$PY" -m pytest -q -p no:cacheprovider tests/unit/verify/test_engine.py \
    tests/unit/verify/test_bab.py -k "engine or cuda or largest" 2>&1 | tail -n 30 | tee "$OUT/pytest.txt"
timeout "$(( ${BUDGET:-400} + 60 ))" "$PY" benchmarks/cuda_engine.py --budget "${BUDGET:-400}" \
    --device "${DEVICE:-cuda}" --seconds "${SECONDS_PER_RUN:-10}" --cases 5 2>&1 | tee "$OUT/bench.log" | tail -n 40
