#!/usr/bin/env bash
# Runs the same `fineline` command on every worker of a Cloud TPU VM pod slice.
#
#   tools/tpu/launch.sh TPU_NAME ZONE [--project P] [--setup] -- train \
#       --gin_file=runs/amber_7b.gin --gin_file=mesh/tpu_v4_512.gin \
#       --gin.MODEL_DIR="'gs://bucket/amber'" --gin.TOKENIZER="'gs://bucket/tokenizer.model'"
#
# --setup first copies this checkout to every worker and installs it with the TPU extra.
# The command runs with --multihost, so jax.distributed.initialize() discovers the slice.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
TPU_NAME=$1 ZONE=$2
shift 2
PROJECT_ARGS=() SETUP=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --project) PROJECT_ARGS=(--project "$2"); shift 2 ;;
    --setup) SETUP=1; shift ;;
    *) usage ;;
  esac
done
[ "${1:-}" = "--" ] || usage
shift
[ $# -ge 1 ] || usage

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
REMOTE_DIR='~/fineline'
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${PROJECT_ARGS[@]}" \
    --worker=all --command "$1"
}

if [ "$SETUP" = 1 ]; then
  tarball=$(mktemp /tmp/fineline-XXXX.tar.gz)
  tar -C "$ROOT" --exclude=.venv --exclude=.git -czf "$tarball" .
  gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:/tmp/fineline.tar.gz" --zone "$ZONE" \
    "${PROJECT_ARGS[@]}" --worker=all
  rm -f "$tarball"
  ssh_all "mkdir -p $REMOTE_DIR && tar -C $REMOTE_DIR -xzf /tmp/fineline.tar.gz && \
    cd $REMOTE_DIR && python3 -m pip install -q -e '.[tpu]'"
fi

# Quote every argument for the remote shell, so gin strings survive the trip.
quoted=$(printf ' %q' "$@")
ssh_all "cd $REMOTE_DIR && python3 -m fineline.cli$quoted --multihost 2>&1 | tee -a ~/fineline.log"
