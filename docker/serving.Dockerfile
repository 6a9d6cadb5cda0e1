# syntax=docker/dockerfile:1.7
# The serving image: KServe predictors (zm-serve) and the Feast feature server, from uv.lock's `serving` group.
# Build from the repository root:
#   docker build --build-arg ZM_CODE_VERSION="$(zm version)" -f docker/serving.Dockerfile -t ghcr.io/zero-margin/serving:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first (cached until uv.lock changes), then the project itself, never editable.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --group serving --no-install-project
COPY zmlops ./zmlops
COPY training ./training
COPY feature_repo ./feature_repo
COPY inference_services ./inference_services
COPY monitoring ./monitoring
COPY governance ./governance
COPY dashboards ./dashboards
COPY delivery ./delivery
RUN uv sync --frozen --no-default-groups --group serving --no-editable

FROM ${PYTHON_IMAGE}
# libgomp: OpenMP runtime of implicit and scikit-learn.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 zm && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/zm zm
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    ZM_HOME=/var/lib/zm ZM_SERVING__HOST=0.0.0.0 HOME=/var/lib/zm \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 FEAST_USAGE=False OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# The code version every training run and audit entry records (zmlops/version.py); the image
# holds no git checkout, so the build passes it:  --build-arg ZM_CODE_VERSION="$(zm version)"
ARG ZM_CODE_VERSION=""
ENV ZM_CODE_VERSION=${ZM_CODE_VERSION}
WORKDIR /app
USER 10001:10001
EXPOSE 8080 6566
HEALTHCHECK NONE
ENTRYPOINT ["zm-serve"]
