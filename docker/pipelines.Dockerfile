# syntax=docker/dockerfile:1.7
# The pipelines image: Airflow 3 with our DAGs and task code, the MLflow tracking server and the alert
# receiver, from uv.lock's `pipelines` group. Built on the official Airflow image so the official
# Apache Airflow chart's entrypoint and commands work unchanged; our locked environment comes first on
# PATH, so `airflow`, `mlflow` and `zm` are the locked versions.
# Build from the repository root:
#   docker build --build-arg ZM_CODE_VERSION="$(zm version)" -f docker/pipelines.Dockerfile -t ghcr.io/zero-margin/pipelines:0.1.0 .
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${AIRFLOW_IMAGE} AS build
USER root
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --group pipelines --no-install-project
COPY zmlops ./zmlops
COPY training ./training
COPY feature_repo ./feature_repo
COPY inference_services ./inference_services
COPY monitoring ./monitoring
COPY governance ./governance
COPY dashboards ./dashboards
COPY delivery ./delivery
COPY dags ./dags
COPY dvc.yaml params.yaml ./
RUN uv sync --frozen --no-default-groups --group pipelines --no-editable

FROM ${AIRFLOW_IMAGE}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends git libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 zm && useradd --uid 10001 --gid 0 --no-create-home --home-dir /var/lib/zm zm
COPY --from=build --chown=50000:0 /app /app
# Our DAGs where the official chart looks for baked-in DAGs.
COPY --chown=50000:0 dags /opt/airflow/dags
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 \
    AIRFLOW__CORE__LOAD_EXAMPLES=False SCARF_ANALYTICS=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=False FEAST_USAGE=False OPENBLAS_NUM_THREADS=1
# The code version every training run and audit entry records (zmlops/version.py); the image
# holds no git checkout, so the build passes it:  --build-arg ZM_CODE_VERSION="$(zm version)"
ARG ZM_CODE_VERSION=""
ENV ZM_CODE_VERSION=${ZM_CODE_VERSION}
USER 50000
WORKDIR /opt/airflow
