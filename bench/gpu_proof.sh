#!/usr/bin/env bash
# The CUDA path proven in one call, one table at the end (issue 21). Each step writes JSON rows to $OUT; a step that
# fails or runs past its time limit is a FAILED row and the next step still runs (those that need its output fail).
#
#   bench/gpu_proof.sh             the real run, on a GPU machine (about 7 minutes on an H100/H200)
#   bench/gpu_proof.sh --dry-run   every step on the CPU at tiny sizes (CPU providers, a few batches and requests):
#                                  the same table, in about a minute; CI runs it (tests/test_gpu_proof.py)
#
# Steps: 1. training speed (bench/train_speed.py: convnext_tiny 224, bf16 autocast, channels-last; the trainer's loop
# on synthetic tensors and from the uint8 cache, against a bare loop in the same run); 2. a short real training run
# `python -m trainer train --device cuda` on the Kermany 224-px set (torch.compile and the EMA on), exported to fp32
# and fp16 ONNX, both checked against PyTorch on the GPU (bench/gpu_parity.py, through the service's loader);
# 3. the GPU tests (tests/test_gpu_decode.py: nvImageCodec against the host decoder within its tolerance;
# tests/test_service_io_binding.py: I/O binding with pinned buffers on CUDA); 4. serving 2048x2048 JPEGs at c=1, 16
# and 64: the service (SERVE_PROVIDER=cuda, fp16, host and GPU decoding) against a plain FastAPI server calling
# onnxruntime CUDA once per image (bench/gpu_serve.py). Then the table (bench/gpu_table.py; also $OUT/table.md).
#
# On the lent GPU machine (Python 3.12, PyTorch with CUDA 13, CPU-only onnxruntime, no network, the repo copied
# without ../shared): bench/gpu_carry.sh prepare (here, once) packs onnxruntime-gpu 1.31.1, nvImageCodec + nvJPEG,
# the serving wheels (FastAPI, uvicorn, pydantic, ...) and the Kermany set into git-ignored .gpu-carry/partNN
# folders, each small enough to travel beside the working tree; carry one per call (the machine keeps them while it
# stays warm), the last call runs this script, which joins and checks them (bench/gpu_carry.sh unpack), installs the
# wheels with `pip install --no-index --no-deps --target /tmp/site`, puts /tmp/site first on PYTHONPATH and the
# NVIDIA libraries on LD_LIBRARY_PATH; the service calls onnxruntime.preload_dlls() before its first CUDA session.
# bench/gpu_carry.sh prints the exact sequence of calls.
#
# The GPU image on a GPU host (not part of this run): docker build --target gpu -t medimaging-service:gpu . &&
#   docker run --gpus all -p 8000:8000 -v "$OUT/models:/models:ro" -e SERVE_MODEL_DIR=/models medimaging-service:gpu
#   then scripts/smoke.sh http://localhost:8000 (compose: docker compose --profile gpu up -d service-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: bench/gpu_proof.sh [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-runs/gpu_proof$([ "$DRY" = 1 ] && echo -dry)}
rm -rf "$OUT" && mkdir -p "$OUT/logs"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
started=$(date +%s)

if [ "$DRY" = 0 ] && [ -d .gpu-carry ]; then
  bench/gpu_carry.sh unpack || { echo "gpu_proof: the carried parts are incomplete or damaged" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
  # CUDA, cuDNN, cuBLAS (PyTorch's pip packages) and nvJPEG (carried) for onnxruntime and nvImageCodec to dlopen.
  purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  nvidia_libs=$(find /tmp/site/nvidia "$purelib/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd:)
  export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
KERMANY=${KERMANY:-}
for candidate in /tmp/gpu-carry/kermany_chest_xray_224 ../shared/data/kermany_chest_xray_224; do
  [ -z "$KERMANY" ] && [ -d "$candidate/train" ] && KERMANY=$candidate
done
[ -n "$KERMANY" ] || { echo "gpu_proof: no Kermany 224-px set (set KERMANY=...)" >&2; exit 1; }

if [ "$DRY" = 1 ]; then
  DEVICE=cpu PROVIDER=cpu
  SPEED=(--arch convnext_atto --size 32 --batch-size 4 --steps 2 --rounds 1 --amp-dtype none --workers 0)
  TRAIN=(--set model.arch=convnext_atto --set model.stem_stride=2 --set preprocessing.height=32
         --set preprocessing.width=32 --set epochs=1 --set batch_size=8 --set data.limit=24 --set data.num_workers=0
         --set report.bootstrap=20)
  PARITY=(--count 8)
  GPU_TESTS=(tests/test_gpu_decode.py -k nvimgcodec_equals)
  SERVE=(--size 256 --concurrency 1 2 --requests 6 --max-seconds 3)
  TITLE="gpu_proof DRY RUN on the CPU ($(nproc) cores), tiny sizes: the table's layout, not CUDA figures"
else
  DEVICE=cuda PROVIDER=cuda
  SPEED=(--arch convnext_tiny --size 224 --batch-size 128 --steps 15 --rounds 2 --amp-dtype bf16 --channels-last
         --workers "$(( $(nproc) > 12 ? 12 : $(nproc) ))")
  TRAIN=(--set model.arch=convnext_tiny --set model.stem_stride=4 --set preprocessing.height=224
         --set preprocessing.width=224 --set epochs=2 --set batch_size=128 --set compile=true
         --set data.num_workers="$(( $(nproc) > 12 ? 12 : $(nproc) ))" --set report.bootstrap=200)
  PARITY=(--count 64)
  GPU_TESTS=(tests/test_gpu_decode.py tests/test_service_io_binding.py)
  SERVE=(--size 2048 --concurrency 1 16 64 --requests 3000 --max-seconds 5)
  TITLE="gpu_proof on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
fi

# The whole run stays inside one device call (600 s at most): each step's limit is cut to what is left of
# $PROOF_BUDGET_S, keeping 20 s for the table; a step with no time left is a FAILED row.
BUDGET=${PROOF_BUDGET_S:-$([ "$DRY" = 1 ] && echo 900 || echo 570)}
STEP=0  # the steps' number, which orders the table's rows (N-name.json, N-name.failed.json)

# step NAME SECONDS COMMAND...: run it with a time limit, its output in $OUT/logs/NAME.log; a failure becomes a row.
step() {
  local name=$1 limit=$2
  shift 2
  STEP=$((STEP + 1))
  local begun=$(($(date +%s)))
  local left=$((BUDGET - 20 - (begun - started)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "== $name: no time left in the ${BUDGET}s budget"
    printf '[{"section": "%s", "what": "step %s", "value": "FAILED: no time left in the %ss budget", "ok": false}]\n' \
      "$name" "$name" "$BUDGET" >"$OUT/$STEP-$name.failed.json"
    return 1
  fi
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc after $(($(date +%s) - begun)) s; log $OUT/logs/$name.log"
  if [ "$rc" != 0 ]; then
    tail -5 "$OUT/logs/$name.log" | sed 's/^/   | /'
    local why
    why=$(grep -v '^\s*$' "$OUT/logs/$name.log" | tail -1 | tr -d '"\\' | cut -c1-150)
    [ "$rc" = 124 ] && why="past its ${limit}s limit"
    printf '[{"section": "%s", "what": "step %s", "value": "FAILED (rc %s): %s", "ok": false}]\n' \
      "$name" "$name" "$rc" "$why" >"$OUT/$STEP-$name.failed.json"
  fi
  return "$rc"
}

RUN="$OUT/run"
step speed 120 "$PY" bench/train_speed.py --device "$DEVICE" "${SPEED[@]}" --source synthetic --source cache \
  --kermany "$KERMANY" --json "$OUT/1-speed.json"
step train 270 "$PY" -m trainer train --config configs/kermany_default.yaml --device "$DEVICE" \
  --data-path "$KERMANY" --output-dir "$RUN" --no-progress --set name=kermany-gpu-proof --set version=0.0.0 \
  --set data.cache_dir="$OUT/cache" "${TRAIN[@]}" &&
  "$PY" bench/gpu_table.py --training-rows "$RUN" "$OUT/2-train.json"
MODELS="$OUT/models"
step export 150 bash -c "'$PY' -m export onnx '$RUN/best.pt' --model-dir '$MODELS' --force &&
  '$PY' -m export fp16 \"\$(ls '$MODELS'/*/*/model.onnx)\" --speed-seconds 0 --force"
step parity 90 bash -c "'$PY' bench/gpu_parity.py --checkpoint '$RUN/best.pt' --model-dir \"\$(dirname \"\$(ls \
  '$MODELS'/*/*/model.onnx)\")\" --images '$KERMANY/test' --device '$DEVICE' --provider '$PROVIDER' \
  ${PARITY[*]} --json '$OUT/4-parity.json'"
step gpu_tests 90 "$PY" -m pytest -q -p no:cacheprovider -rs "${GPU_TESTS[@]}"
[ -s "$OUT/logs/gpu_tests.log" ] && "$PY" bench/gpu_table.py --pytest-rows "$OUT/logs/gpu_tests.log" "$OUT/5-tests.json"
step serve 180 "$PY" bench/gpu_serve.py --model-dir "$MODELS" --provider "$PROVIDER" "${SERVE[@]}" \
  --logs "$OUT/logs" --json "$OUT/6-serve.json"

echo
TITLE="$TITLE; $(($(date +%s) - started)) s in all"
mapfile -t STEPS < <(ls "$OUT"/*.json | sort)
"$PY" bench/gpu_table.py --title "$TITLE" "${STEPS[@]}" | tee "$OUT/table.txt"
"$PY" bench/gpu_table.py --markdown --title "$TITLE" "${STEPS[@]}" >"$OUT/table.md"
! grep -q '"value": "FAILED' "$OUT"/*.json
