#!/usr/bin/env bash
# ConvNeXt vs ResNet50 on the Kermany 224-px set (official test split, val carved out of train by patient),
# through `python -m trainer compare`: the pneumonia study's table with 95% CIs and both confusion matrices.
#
#   bench/compare_kermany.sh cpu    # CPU-feasible recipe: 128 px, 3 epochs (2 cores: about 30-40 min)
#   bench/compare_kermany.sh gpu    # the study's settings on one GPU: 224 px, 20 epochs, Adam 1e-4, exponential LR
#   bench/compare_kermany.sh smoke  # proves the path in a minute: 16 images per split, 64 px, 1 epoch
#
# Extra arguments go to the trainer (e.g. --set model.weights=/path/resnet50-imagenet.pth for pretrained starts;
# the study fine-tuned ImageNet weights, which are never downloaded here). Prints the wall time and compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-cpu}"; shift || true
DATA="${KERMANY_224:-../shared/data/kermany_chest_xray_224}"
OUT="${OUT:-runs/compare-kermany-$MODE}"
PY="${PYTHON:-.venv/bin/python}"
COMMON=(compare --data-kind kermany --data-path "$DATA" --val-fraction 0.1 --archs convnext_tiny,resnet50
        --threshold-policy youden --no-progress --output-dir "$OUT")
case "$MODE" in
  smoke) RECIPE=(--limit 16 --epochs 1 --batch-size 8 --set preprocessing.height=64 --set preprocessing.width=64
                 --set preprocessing.stats_samples=16 --set report.bootstrap=200 --device cpu) ;;
  cpu)   RECIPE=(--epochs 3 --batch-size 32 --lr 1e-3 --workers 2 --cache --device cpu
                 --set preprocessing.height=128 --set preprocessing.width=128 --set preprocessing.crop=none
                 --set optim.schedule=cosine --set optim.warmup_epochs=0.5) ;;
  gpu)   RECIPE=(--epochs 20 --batch-size 32 --lr 1e-4 --workers 8 --cache --device cuda
                 --set preprocessing.height=224 --set preprocessing.width=224 --set preprocessing.crop=none
                 --set optim.optimizer=adam --set optim.weight_decay=0 --set optim.schedule=exponential
                 --set optim.gamma=0.9 --set optim.warmup_epochs=0) ;;
  *) echo "usage: $0 cpu|gpu|smoke [trainer flags]" >&2; exit 2 ;;
esac
if [ -e "$OUT" ]; then echo "error: $OUT exists; remove it or set OUT=" >&2; exit 2; fi
START=$(date +%s)
"$PY" -m trainer "${COMMON[@]}" "${RECIPE[@]}" "$@"
END=$(date +%s)
echo "mode $MODE: wall time $((END - START)) s on $(nproc) CPU cores$(command -v nvidia-smi >/dev/null && echo ', GPU present')"
cat "$OUT/compare.md"
