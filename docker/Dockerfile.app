# API / worker image: the job service and the client pipeline only (no Triton server, no torch):
# `lipsync api --workers 0` or `lipsync worker`, talking to Triton over gRPC (LIPSYNC_TRITON_URLS).
#
# Build arguments:
#   PYTHON_IMAGE  base image: Debian bookworm, with or without Python 3.11 (default python:3.11-slim-bookworm)
#   UID           numeric id of the non-root user the image runs as (default 10001)
#   PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL, PIP_CERT: pip's own settings for a mirror or a TLS-inspecting proxy
#
#   docker build -f docker/Dockerfile.app -t lipsync-triton-app:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG UID=10001
ARG PIP_FIND_LINKS
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's security updates should apply on rebuild: versions follow the base image's release.
# Python 3.11 comes from Debian where the base has none (a plain Debian base).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates passwd \
 && { command -v python3.11 >/dev/null || apt-get install -y --no-install-recommends python3.11 python3.11-venv; } \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid "${UID}" --create-home --shell /usr/sbin/nologin lipsync
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lipsync_triton lipsync_triton
COPY export export
COPY client client
COPY preprocessing preprocessing
COPY perf perf
COPY serving serving
COPY service service
RUN python3.11 -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir '.[service]' \
 && mkdir -p /data && chown "${UID}:${UID}" /data
ENV PATH=/app/.venv/bin:$PATH \
    LIPSYNC_DATA_DIR=/data \
    LIPSYNC_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER ${UID}
EXPOSE 7860
HEALTHCHECK --interval=15s --timeout=5s CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/healthz')"]
ENTRYPOINT ["lipsync"]
CMD ["api", "--host", "0.0.0.0", "--workers", "0"]
