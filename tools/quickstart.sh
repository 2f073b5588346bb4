#!/usr/bin/env bash
# Quickstart on the CPU: synthetic shapes dataset -> train a small detector -> VOC table and COCO summary on the val
# split -> demo on val images and on photos -> loss/mAP curves. Everything lands in
# work_dirs/quickstart/<config name>_<style>/ (recreated).
#
#   tools/quickstart.sh                      # PYTHON=.venv/bin/python tools/quickstart.sh to pick the interpreter
#   CONFIG=configs/quickstart/retinanet_shapes.py tools/quickstart.sh   # SSD (default), RetinaNet or M2Det recipe
#   STYLE=hard tools/quickstart.sh           # the harder shapes (other classes, textures, varied image sizes): the
#                                            # recipe is pointed at it by its data root and class names alone
#   NUM_TRAIN=400 NUM_VAL=100 tools/quickstart.sh
#   DATA=/tmp/shapes WORK=/tmp/qs tools/quickstart.sh   # where the data and the outputs go (both recreated)
#   TRAIN_ARGS="--amp --cfg-options train_dataloader.batch_size=8" tools/quickstart.sh   # extra tools/train.py args
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CONFIG=${CONFIG:-configs/quickstart/ssd_shapes.py}
STYLE=${STYLE:-simple}
case "$STYLE" in
  simple) DATA=${DATA:-data/shapes} ;;
  hard) DATA=${DATA:-data/shapes_hard} ;;
  *) echo "STYLE must be simple or hard, got '$STYLE'" >&2; exit 2 ;;
esac
NAME=$(basename "$CONFIG" .py)
WORK=${WORK:-work_dirs/quickstart/${NAME}_${STYLE}}
NUM_TRAIN=${NUM_TRAIN:-2000}
NUM_VAL=${NUM_VAL:-200}
PHOTOS=${PHOTOS:-../shared/data/images}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "1/5 shapes dataset ($STYLE): $NUM_TRAIN train + $NUM_VAL val images in $DATA"
rm -rf "$DATA" "$WORK"  # the quickstart is a fixed recipe: start clean so no stale checkpoint is picked up
"$PY" tools/dataset_converters/make_shapes.py --out "$DATA" --num "$NUM_TRAIN" --format voc --seed 0 --split train \
  --style "$STYLE"
"$PY" tools/dataset_converters/make_shapes.py --out "$DATA" --num "$NUM_VAL" --format voc --seed 0 --split val \
  --style "$STYLE"
# a new user's change for their own VOC-layout data: the data root and the class names, nothing else
classes="($(paste -sd, "$DATA/classes.txt"))"
DATA_ARGS=()
for loader in train_dataloader val_dataloader test_dataloader; do
  DATA_ARGS+=("$loader.dataset.data_root=$DATA/" "$loader.dataset.classes=$classes")
done

step "2/5 training $CONFIG"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of arguments
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --cfg-options "${DATA_ARGS[@]}" ${TRAIN_ARGS:-}
CFG_USED="$WORK/$NAME.py"  # the config as trained, overrides included (tools/train.py writes it)
CKPT=$(ls "$WORK"/best_*.pth 2>/dev/null | head -n 1 || true)
if [ -z "$CKPT" ]; then CKPT=$(ls -v "$WORK"/epoch_*.pth | tail -n 1); fi
echo "checkpoint: $CKPT"

step "3/5 evaluation on the val split (VOC AP table and COCO summary)"
"$PY" tools/test.py "$CFG_USED" "$CKPT" --eval voc coco --out "$WORK/val_detections.json" --work-dir "$WORK" \
  | tee "$WORK/test_output.txt"

step "4/5 demo"
mkdir -p "$WORK/demo_inputs"
for i in 000000 000001 000002 000003; do cp "$DATA/JPEGImages/val_$i.jpg" "$WORK/demo_inputs/"; done
"$PY" tools/demo.py "$CFG_USED" "$CKPT" "$WORK/demo_inputs" --out "$WORK/demo/shapes"
if [ -d "$PHOTOS" ]; then
  # photos of real scenes: the detector knows only shapes, this shows the tool on ordinary images
  "$PY" tools/demo.py "$CFG_USED" "$CKPT" "$PHOTOS" --out "$WORK/demo/photos"
else
  echo "no photos at $PHOTOS (set PHOTOS=DIR); skipped"
fi

step "5/5 curves"
"$PY" tools/analysis/plot_curves.py "$WORK"/*.log.json --out "$WORK/curves.png"

end=$(( $(date +%s) - start ))
echo
map_line=$(grep -E '^voc/mAP' "$WORK/test_output.txt" || echo 'voc/mAP: see test_output.txt')
echo "quickstart ($NAME, $STYLE shapes) done in ${end} s: $map_line"
echo "outputs in $WORK: checkpoints, *.log.json, tf_logs/, val_detections.json, demo/, curves.png"
