#!/usr/bin/env bash
# Start a real MLflow tracking server for lightnas campaigns.
#
#   mlflow_server/start.sh [PORT]          # default 5000; data under mlflow_server/data/
#   MLFLOW_DATA=/srv/mlflow mlflow_server/start.sh 5001
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 && nas search ...
#
# Binds 127.0.0.1 only: the server has no authentication. To share it, put it behind a reverse proxy
# with auth rather than binding 0.0.0.0. For PostgreSQL, set BACKEND_STORE_URI, e.g.
#   BACKEND_STORE_URI=postgresql://user:pass@127.0.0.1/mlflow mlflow_server/start.sh
# (needs `pip install psycopg2-binary`).
#
# Measured on the reference machine: `--workers 1` with job execution off starts in ~6 s and ~370 MB;
# mlflow's defaults (4 workers + job runner) take ~12 s and ~2.6 GB (../shared/STACK.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-${PORT:-5000}}"
data="${MLFLOW_DATA:-$here/data}"
mkdir -p "$data/artifacts"
backend="${BACKEND_STORE_URI:-sqlite:///$data/mlflow.db}"
mlflow_bin="${MLFLOW_BIN:-$(command -v mlflow || echo "$here/../.venv/bin/mlflow")}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
echo "mlflow server on http://127.0.0.1:$port (loopback only), store $backend" >&2
exec "$mlflow_bin" server \
  --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri "$backend" \
  --artifacts-destination "$data/artifacts" --serve-artifacts
