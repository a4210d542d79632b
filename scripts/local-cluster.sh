#!/usr/bin/env bash
# A Sandlot cluster on this machine: PostgreSQL 15, N node agents in their own network namespaces,
# two API instances (scripts/local_cluster.py says how; docs/scale-out.md "Local cluster").
#   scripts/local-cluster.sh up [N]    # N nodes (default 3); the last line printed is the SDK env
#   scripts/local-cluster.sh down      # stop everything, remove its host traces
#   scripts/local-cluster.sh env|status|stop-node I|kill-node I|start-node I
# State lives in $SANDLOT_CLUSTER_DIR (default /tmp/sandlot-cluster). Needs root and `make setup`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../.venv/bin/python" "$here/local_cluster.py" "$@"
