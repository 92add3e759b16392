# One image for every rtml deployable: streaming engine, Feast apply job, KServe transformer/predictor, CLI.
# Build: docker build -t ghcr.io/rtml-project/rtml:0.1.0 .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rtml ./rtml
COPY rtml_common ./rtml_common
COPY streaming ./streaming
COPY inference ./inference
COPY feature_repo ./feature_repo
COPY pipelines ./pipelines
COPY components ./components
# CPU-only torch keeps the image small; the index is only consulted for torch.
RUN python -m venv /opt/rtml \
 && /opt/rtml/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu .

FROM python:3.11-slim
LABEL org.opencontainers.image.source="https://github.com/rtml-project/rtml" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/rtml /opt/rtml
# The chart mounts an emptyDir at /tmp and runs with a read-only root filesystem.
ENV PATH=/opt/rtml/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp RTML_HOME=/tmp/rtml
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081 9100
ENTRYPOINT ["rtml"]
