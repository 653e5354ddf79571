# syntax=docker/dockerfile:1
#
# One image per service, all built from the repository root:
#
#   docker build --target api-gateway -t jobsprint/api-gateway .
#   docker build --target executor    -t jobsprint/executor .
#   docker build --target projector   -t jobsprint/projector .
#   docker build --target metrics     -t jobsprint/metrics .
#
# Each image holds one virtualenv, /app/.venv, with its service's distribution, the workspace
# libs it needs and their locked runtime dependencies: no dev group, no sources, no uv.
# Settings come from JOBSPRINT_* environment variables (docs/operations.md lists them).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------
# Build stages. The dependency layer is made from the pyproject files and uv.lock only, so
# a code change rebuilds the last, cheap layer and nothing else.
FROM ${PYTHON_IMAGE} AS build-base
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# every workspace member's pyproject.toml: uv resolves the whole workspace against uv.lock
COPY pyproject.toml uv.lock ./
COPY libs/events/pyproject.toml libs/events/
COPY libs/runtime/pyproject.toml libs/runtime/
COPY libs/workflows/pyproject.toml libs/workflows/
COPY services/api-gateway/pyproject.toml services/api-gateway/
COPY services/executor/pyproject.toml services/executor/
COPY services/projector/pyproject.toml services/projector/
COPY services/metrics/pyproject.toml services/metrics/

FROM build-base AS build-api-gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package jobsprint-api-gateway
COPY libs libs
COPY services/api-gateway services/api-gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package jobsprint-api-gateway

FROM build-base AS build-executor
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package jobsprint-executor
COPY libs libs
COPY services/executor services/executor
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package jobsprint-executor

FROM build-base AS build-projector
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package jobsprint-projector
COPY libs libs
COPY services/projector services/projector
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package jobsprint-projector

FROM build-base AS build-metrics
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package jobsprint-metrics
COPY libs libs
COPY services/metrics services/metrics
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package jobsprint-metrics

# ---------------------------------------------------------------------------------------
# Runtime: the same Python image (the venv's interpreter links to it), an unprivileged user,
# a root-owned read-only /app. Bytecode was compiled at build time, so nothing is written
# next to the code and the root filesystem can be mounted read-only.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 jobsprint \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin jobsprint
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001

FROM runtime AS executor
COPY --from=build-executor /app/.venv /app/.venv
ENV JOBSPRINT_EXECUTOR_HTTP_HOST=0.0.0.0
EXPOSE 8092
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('JOBSPRINT_EXECUTOR_HTTP_PORT', '8092') + '/healthz', timeout=3)"]
CMD ["jobsprint-executor"]

FROM runtime AS projector
COPY --from=build-projector /app/.venv /app/.venv
ENV JOBSPRINT_PROJECTOR_HTTP_HOST=0.0.0.0
EXPOSE 8091
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('JOBSPRINT_PROJECTOR_HTTP_PORT', '8091') + '/healthz', timeout=3)"]
CMD ["jobsprint-projector"]

FROM runtime AS metrics
COPY --from=build-metrics /app/.venv /app/.venv
USER root
# the chDB data folder (mount a volume here); unused when JOBSPRINT_CLICKHOUSE_URL is set
RUN mkdir -p /var/lib/jobsprint/chdb && chown -R 10001:10001 /var/lib/jobsprint
USER 10001:10001
ENV JOBSPRINT_METRICS_HTTP_HOST=0.0.0.0 \
    JOBSPRINT_CHDB_PATH=/var/lib/jobsprint/chdb
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('JOBSPRINT_METRICS_HTTP_PORT', '8090') + '/healthz', timeout=3)"]
CMD ["jobsprint-metrics"]

# Last, so that a plain `docker build .` gives the gateway. The same image runs the admin
# CLI: `docker run --rm -e JOBSPRINT_DATABASE_URL=… jobsprint/api-gateway jobsprint admin …`.
FROM runtime AS api-gateway
COPY --from=build-api-gateway /app/.venv /app/.venv
ENV JOBSPRINT_HTTP_HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('JOBSPRINT_HTTP_PORT', '8080') + '/healthz', timeout=3)"]
CMD ["jobsprint-gateway"]
