# One image for every kvstore program: `kvnode` (the default command), `kvctl` and
# `kvstore-operator`. There is no entrypoint: the command you give is the program that runs.
#
#   docker build -t kvstore:0.1.0 .
#   docker run --rm kvstore:0.1.0 kvnode --help
#   docker run --rm kvstore:0.1.0 kvctl --endpoints HOST:7000 get hello
#   docker run --rm kvstore:0.1.0 kvstore-operator --help
#
# BASE_IMAGE must be a Debian-like image with `python3` (3.11 or newer) and its `venv` module; both
# stages use it, so the virtual environment built in the first runs unchanged in the second. The
# default is the official Python image, pinned to a patch release; pin it to a digest
# (python:3.11.14-slim-bookworm@sha256:...) for byte-for-byte rebuilds. Without a registry, build
# a base with debootstrap and pass it instead (e2e/image/build_and_test.py does exactly that):
#
#   docker build --network host --build-arg BASE_IMAGE=kvstore-base:bookworm -t kvstore:0.1.0 .
#
# Behind a TLS-intercepting proxy, pip in the builder must trust the proxy's CA: give an image
# whose /etc/ssl/certs/ca-certificates.crt holds that bundle as PIP_CA_IMAGE
# (e2e/image/build_and_test.py imports one from the host's bundle). It is copied into the builder stage only; the runtime image
# keeps the base image's own CA bundle. PIP_INDEX_URL and PIP_EXTRA_INDEX_URL set package mirrors.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
ARG PIP_CA_IMAGE=${BASE_IMAGE}

FROM ${PIP_CA_IMAGE} AS pip-ca

# ---------------------------------------------------------------------------------------------
# builder: wheels for every dependency, then one virtual environment with the project installed.
FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
COPY --from=pip-ca /etc/ssl/certs/ca-certificates.crt /etc/kvstore-build/pip-ca.crt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/kvstore-build/pip-ca.crt \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --quiet "pip>=23" "setuptools>=68" wheel

# 1. Dependencies only, from pyproject.toml alone (stub packages stand in for the code), so this
#    layer is rebuilt only when the dependencies change, not on every code edit.
COPY pyproject.toml README.md ./
RUN mkdir -p kvnode operator/kvoperator \
    && touch kvnode/__init__.py operator/kvoperator/__init__.py \
    && /opt/build/bin/pip wheel --quiet --wheel-dir /wheels ".[operator]" \
    && rm -f /wheels/kvstore-*.whl \
    && rm -rf kvnode operator build ./*.egg-info

# 2. The project itself, as a wheel, then the runtime environment from wheels only (no index).
COPY kvnode ./kvnode
COPY operator ./operator
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python3 -m venv --without-pip /opt/kvstore \
    && /opt/build/bin/pip --python /opt/kvstore/bin/python install --quiet --no-index \
       --find-links /wheels "kvstore[operator]" \
    && /opt/kvstore/bin/kvnode --version && /opt/kvstore/bin/kvctl --version \
    && /opt/kvstore/bin/kvstore-operator --version

# ---------------------------------------------------------------------------------------------
# runtime: the base image, a fixed non-root user, and the virtual environment. No compilers, no
# pip, no build files.
FROM ${BASE_IMAGE} AS runtime
ARG KVSTORE_UID=10001
LABEL org.opencontainers.image.title="kvstore" \
      org.opencontainers.image.description="kvnode, kvctl and kvstore-operator: a replicated key-value store for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
# The operator mounts a node's data at /var/lib/kvnode, backups at /backups and a restore source
# at /restore; they belong to the kvstore user, so docker volumes mounted there are writable (in
# Kubernetes the pods' fsGroup 10001 does that for persistent volumes).
RUN groupadd --system --gid ${KVSTORE_UID} kvstore \
    && useradd --system --uid ${KVSTORE_UID} --gid ${KVSTORE_UID} --home-dir /var/lib/kvnode \
       --no-create-home --shell /usr/sbin/nologin kvstore \
    && mkdir -p /var/lib/kvnode /backups /restore \
    && chown ${KVSTORE_UID}:${KVSTORE_UID} /var/lib/kvnode /backups /restore
COPY --from=builder /opt/kvstore /opt/kvstore
ENV PATH=/opt/kvstore/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KVNODE_LISTEN=0.0.0.0:7000 \
    KVNODE_METRICS_LISTEN=0.0.0.0:9100 \
    KVNODE_DATA_DIR=/var/lib/kvnode
USER ${KVSTORE_UID}:${KVSTORE_UID}
WORKDIR /var/lib/kvnode
# 7000: gRPC (KV, Admin, health, reflection); 9100: Prometheus metrics. The operator serves
# metrics on 9090 and its liveness endpoint on 8080.
EXPOSE 7000 9100
CMD ["kvnode"]
