# One Dockerfile, two targets:
#   docker build --target hooks  -t ai-models/hooks:0.1.0 .
#   docker build --target worker -t ai-models/worker:0.1.0 .
# Base image pinned by version; both run as the non-root user 65532.
FROM python:3.11.7-slim-bookworm AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11.7-slim-bookworm AS base
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 65532 ai-models && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin ai-models
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY lib/ /app/lib/
USER 65532:65532

FROM base AS hooks
COPY hooks/ /app/hooks/
EXPOSE 8080
ENTRYPOINT ["gunicorn", "--config", "/app/hooks/gunicorn_conf.py", "hooks.app:app"]

FROM base AS worker
COPY jobs/ /app/jobs/
ENTRYPOINT ["python", "-m", "jobs"]
