#!/usr/bin/env bash
# A kind cluster with kvstore installed: create the cluster (unless it exists), build the image,
# load it into the cluster's nodes, and helm install the chart. Safe to run again.
#
#   e2e/kind/up.sh                      # cluster "kvstore-e2e", release "kvstore" in kvstore-system
#   KIND_CLUSTER_NAME=dev e2e/kind/up.sh
#
# Environment:
#   KIND_CLUSTER_NAME     cluster name (default kvstore-e2e)
#   KVSTORE_IMAGE         image tag (default kvstore:<version>, what the chart runs by default)
#   KVSTORE_BASE_IMAGE    base image for the Dockerfile (default: the Dockerfile's pinned python image)
#   KVSTORE_BUILD         "docker" (default: docker build), "offline" (e2e/image/build_and_test.py:
#                         a debootstrap base, no registry needed), or "skip" (use the existing image)
#   KVSTORE_VALUES        extra values file for helm (default: none; e2e/kind/values.yaml always applies)
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster="${KIND_CLUSTER_NAME:-kvstore-e2e}"
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' kvnode/__init__.py)"
image="${KVSTORE_IMAGE:-kvstore:${version}}"
python="${PYTHON:-python3}"

log() { printf '==> %s\n' "$*" >&2; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e/kind/up.sh: $tool is not installed" >&2; exit 3; }
done

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  # The backup folder every node mounts (kind-config.yaml, extraMounts): made here, writable by the
  # nodes' uid 10001, rather than by docker as root-owned.
  mkdir -p -m 0777 /tmp/kvstore-e2e-backups
  log "creating kind cluster $cluster (1 control plane, 3 workers, backups in /tmp/kvstore-e2e-backups)"
  kind create cluster --name "$cluster" --config e2e/kind/kind-config.yaml --wait 180s
fi
kubectl config use-context "kind-$cluster" >/dev/null

case "${KVSTORE_BUILD:-docker}" in
  docker)
    log "building $image"
    args=(--tag "$image")
    [ -n "${KVSTORE_BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$KVSTORE_BASE_IMAGE")
    docker build "${args[@]}" .
    ;;
  offline)
    log "building $image on a debootstrap base"
    "$python" -m e2e.image.build_and_test --build-only --tag "$image"
    ;;
  skip)
    docker image inspect "$image" >/dev/null
    ;;
  *) echo "KVSTORE_BUILD must be docker, offline or skip" >&2; exit 2 ;;
esac

# Through an archive: `kind load docker-image` fails with Docker's containerd image store
# ("content digest ... not found", kind issue 3795); an archive works with either store.
log "loading $image into the nodes of $cluster"
archive="$(mktemp "${TMPDIR:-/tmp}/kvstore-image.XXXXXX.tar")"
trap 'rm -f "$archive"' EXIT
docker save "$image" -o "$archive"
kind load image-archive "$archive" --name "$cluster"

log "installing the chart"
values=(--values e2e/kind/values.yaml)
[ -n "${KVSTORE_VALUES:-}" ] && values+=(--values "$KVSTORE_VALUES")
helm upgrade --install kvstore charts/kvstore --namespace kvstore-system --create-namespace \
  "${values[@]}" --set "image.repository=${image%:*}" --set "image.tag=${image##*:}" \
  --wait --timeout 5m
kubectl -n kvstore-system rollout status deployment/kvstore-operator --timeout=180s
log "ready: kubectl create namespace demo && kubectl -n demo apply -f e2e/kind/kvstore.yaml (a backup volume: kubectl -n demo apply -f e2e/kind/backup-volume.yaml)"
