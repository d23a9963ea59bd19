#!/usr/bin/env bash
# What bench/gpu_proof.sh needs on the lent GPU machine that it lacks (it has Python 3.12, PyTorch with CUDA 13 and a
# CPU-only onnxruntime, no network, and gets the working tree without ../shared), packed to travel in parts.
#
#   bench/gpu_carry.sh prepare   here: download the wheels once (kept in $GPU_WHEELS, default
#                                ~/.cache/medimaging/gpu-wheels; nothing is downloaded again when they are there), tar
#                                them with the Kermany 224-px set, split the tar into git-ignored .gpu-carry/partNN
#                                folders each small enough to travel beside the working tree (64 MiB per call in all),
#                                and print the calls to make
#   bench/gpu_carry.sh unpack    there (bench/gpu_proof.sh runs it): join the parts, check the sha256, untar to
#                                /tmp/gpu-carry, pip install --no-index --no-deps --target /tmp/site the wheels
#
# The wheels: onnxruntime-gpu (CUDA 13; its CUDA, cuDNN and cuBLAS libraries are PyTorch's, already there, found by
# onnxruntime.preload_dlls), nvImageCodec and nvJPEG (GPU decoding), and the serving packages the machine lacks
# (FastAPI, Starlette, uvicorn, httptools, python-multipart, pydantic, pydantic-settings, pydicom, ...), at the
# versions docker/requirements-serve-gpu.txt pins (one list of versions), for CPython 3.12 on manylinux x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
NAMES=(onnxruntime-gpu nvidia-nvimgcodec-cu13 nvidia-nvjpeg fastapi starlette pydantic pydantic_core pydantic-settings
  python-dotenv typing-inspection annotated-types uvicorn httptools python-multipart pydicom)
LIMIT=$((64 * 1024 * 1024))

pin() {  # the version docker/requirements-serve-gpu.txt pins for a name (- and _ alike)
  local pattern
  pattern=$(echo "$1" | sed 's/[-_]/[-_]/g')
  grep -iE "^${pattern}==" docker/requirements-serve-gpu.txt | cut -d= -f3
}

tree_bytes() {  # what travels with every call: tracked and untracked, not ignored, files
  git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}'
}

prepare() {
  local wheels=${GPU_WHEELS:-$HOME/.cache/medimaging/gpu-wheels}
  local kermany=${KERMANY:-../shared/data/kermany_chest_xray_224}
  [ -d "$kermany/train" ] || { echo "no Kermany set at $kermany (set KERMANY=...)" >&2; exit 1; }
  mkdir -p "$wheels"
  local specs=() missing=0 name version file
  for name in "${NAMES[@]}"; do
    version=$(pin "$name")
    [ -n "$version" ] || { echo "docker/requirements-serve-gpu.txt pins no $name" >&2; exit 1; }
    specs+=("$name==$version")
    file=$(echo "$name" | tr '-' '_')
    compgen -G "$wheels/${file}-${version}-*.whl" >/dev/null || missing=1
  done
  if [ "$missing" = 1 ]; then  # pip skips the files already there: the 256 MB onnxruntime-gpu comes once
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
      -d "$wheels" "${specs[@]}"
  fi
  stage=$(mktemp -d)  # global: the EXIT trap runs after this function has returned
  trap 'rm -rf "$stage"' EXIT
  mkdir "$stage/wheels"
  for name in "${NAMES[@]}"; do
    file=$(echo "$name" | tr '-' '_')
    cp "$wheels/${file}-$(pin "$name")-"*.whl "$stage/wheels/"
  done
  ln -s "$(cd "$kermany" && pwd)" "$stage/kermany_chest_xray_224"
  tar -chf "$stage/carry.tar" -C "$stage" wheels kermany_chest_xray_224
  local sum total chunk parts
  sum=$(sha256sum "$stage/carry.tar" | cut -d' ' -f1)
  total=$(stat -c %s "$stage/carry.tar")
  chunk=$((LIMIT - $(tree_bytes) - 2 * 1024 * 1024))  # 2 MiB to spare for files that change meanwhile
  [ "$chunk" -gt $((4 * 1024 * 1024)) ] || { echo "the working tree leaves no room to carry anything" >&2; exit 1; }
  parts=$(((total + chunk - 1) / chunk))
  rm -rf "$CARRY" && mkdir -p "$CARRY"
  split -b "$chunk" -d -a 2 --numeric-suffixes=1 "$stage/carry.tar" "$CARRY/chunk"
  for piece in "$CARRY"/chunk*; do
    local index=${piece##*chunk}
    mkdir "$CARRY/part$index" && mv "$piece" "$CARRY/part$index/data"
    printf 'parts %s\nsha256 %s\n' "$parts" "$sum" >"$CARRY/part$index/MANIFEST"
  done
  git check-ignore -q "$CARRY/part01/data" || { echo "$CARRY is not git-ignored: it would travel every call" >&2; exit 1; }
  echo "packed $((total / 1024 / 1024)) MiB in $parts parts of at most $((chunk / 1024 / 1024)) MiB under $CARRY/"
  echo "(each call carries the working tree, $(($(tree_bytes) / 1024 / 1024)) MiB, and one part)."
  echo "Make these device calls back to back (an idle machine goes back after about 30 s; it keeps the parts"
  echo "already carried while it stays warm); status first, to see that this task is lent a GPU:"
  for index in $(seq -f %02g 1 $((parts - 1))); do
    echo "  run(command=\"ls -l $CARRY/part*/data\", carry=[\"$CARRY/part$index\"], timeout_s=60)"
  done
  echo "  run(command=\"bench/gpu_proof.sh --out /tmp/proof; cp /tmp/proof/table.txt /tmp/proof/table.md \$OUT/;" \
    "tar -czf \$OUT/proof.tgz -C /tmp/proof logs \$(cd /tmp/proof && ls *.json)\"," \
    "carry=[\"$CARRY/part$(printf %02d "$parts")\"], timeout_s=600)"
  echo "then give_back. If a part was lost (a fresh machine), unpack says which and the calls start again."
}

unpack() {
  compgen -G "$CARRY/part*/MANIFEST" >/dev/null || { echo "no $CARRY/part*/ here" >&2; exit 1; }
  local first expected sum have
  first=$(ls "$CARRY"/part*/MANIFEST | head -1)
  expected=$(awk '$1 == "parts" {print $2}' "$first")
  sum=$(awk '$1 == "sha256" {print $2}' "$first")
  if [ -f "/tmp/site/.carried-$sum" ]; then echo "gpu_carry: already unpacked ($sum)"; return 0; fi
  have=$(ls -d "$CARRY"/part*/ | wc -l)
  for index in $(seq -f %02g 1 "$expected"); do
    [ -f "$CARRY/part$index/data" ] || { echo "part $index of $expected is missing (have $have)" >&2; exit 1; }
  done
  cat $(for index in $(seq -f %02g 1 "$expected"); do echo "$CARRY/part$index/data"; done) >/tmp/gpu-carry.tar
  echo "$sum  /tmp/gpu-carry.tar" | sha256sum -c --quiet || { echo "the joined parts fail their sha256" >&2; exit 1; }
  rm -rf /tmp/gpu-carry && mkdir -p /tmp/gpu-carry && tar -xf /tmp/gpu-carry.tar -C /tmp/gpu-carry
  rm -f /tmp/gpu-carry.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    /tmp/gpu-carry/wheels/*.whl
  rm -f /tmp/site/nvidia/__init__.py  # nvImageCodec's: `nvidia` stays one namespace with PyTorch's nvidia.* libraries
  touch "/tmp/site/.carried-$sum"
  echo "gpu_carry: $(ls /tmp/gpu-carry/wheels | wc -l) wheels in /tmp/site, Kermany at /tmp/gpu-carry/kermany_chest_xray_224"
}

case "${1:-}" in
  prepare) prepare ;;
  unpack) unpack ;;
  *) echo "usage: bench/gpu_carry.sh prepare|unpack" >&2; exit 2 ;;
esac
