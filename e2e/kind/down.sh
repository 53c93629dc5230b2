#!/usr/bin/env bash
# Delete the kind cluster that e2e/kind/up.sh made.
set -euo pipefail
kind delete cluster --name "${KIND_CLUSTER_NAME:-kvstore-e2e}"
