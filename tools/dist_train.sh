#!/usr/bin/env bash
# Distributed training with torchrun: one process per GPU (or per CPU worker with --device cpu).
#   tools/dist_train.sh CONFIG NGPUS [train.py args...]
# Several machines: run it on each with NNODES, NODE_RANK, MASTER_ADDR (and PORT) set, e.g.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/dist_train.sh CONFIG 8
# Python: $PYTHON when set, else the project's virtual environment (.venv/bin/python) when there is one, else python.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NGPUS [tools/train.py arguments...]" >&2
  echo "  runs $PYTHON (\$PYTHON when set, else $ROOT/.venv/bin/python when it exists, else python from PATH)" >&2
  exit 2
fi
CONFIG=$1
NGPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
  --nproc_per_node="$NGPUS" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
