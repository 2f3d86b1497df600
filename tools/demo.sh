#!/usr/bin/env bash
# The main job on the bundled default, on CPU: train the `demo` preset on the generated skills
# corpus with every checkpoint scored in-process, export the last checkpoint to Hugging Face
# format and load it back with transformers, then report capability dynamics.
#
#   tools/demo.sh [RUN_DIR]        (default: runs/demo; an earlier run there is replaced)
source "$(dirname "$0")/_venv.sh"
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
RUN="${1:-runs/demo}"
if [ -e "$RUN" ] && [ ! -f "$RUN/config.gin" ]; then
  echo "error: $RUN exists and is not an earlier run; pass another RUN_DIR" >&2
  exit 1
fi
rm -rf "$RUN"

echo "== 1/3 training the demo model (checkpoints evaluated in-process) -> $RUN"
fineline train --gin_file=runs/demo_cpu.gin --gin.MODEL_DIR="'$RUN'"

LAST="$RUN/checkpoints/$(ls "$RUN/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -n 1)"
echo "== 2/3 exporting $LAST to Hugging Face format -> $RUN/hf"
fineline convert --to_hf "$LAST" --out "$RUN/hf" --overwrite
python tools/check_hf_export.py --checkpoint "$LAST" --hf_dir "$RUN/hf"

echo "== 3/3 analysing capability dynamics -> $RUN/report"
fineline analyze --results "$RUN" --output "$RUN/report"
