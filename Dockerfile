# One image for every role (migrate, workers, UI, monitor); the role is the container's command.
# Build a GPU image with:  docker build --build-arg EXTRAS=dev,gpu,monitor -t workbench:gpu .
FROM python:3.11-slim

ARG EXTRAS=monitor
# Where pip may find a CPU-only torch build (netcal needs torch); empty: the default index.
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    WORKBENCH_HOME=/var/lib/workbench WORKBENCH_ARTIFACT_ROOT=/artifacts

RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 workbench && mkdir -p /var/lib/workbench /artifacts /data \
    && chown -R workbench /var/lib/workbench /artifacts

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY workbench ./workbench
COPY workers ./workers
COPY ui ./ui
COPY cli ./cli
COPY migrations ./migrations
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    else pip install --no-cache-dir torch==2.13.0; fi \
    && pip install --no-cache-dir -e ".[${EXTRAS}]"

USER workbench
EXPOSE 8501 5555
CMD ["workbench", "--help"]
