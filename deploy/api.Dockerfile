# The search service (`shopvision api`): HTTP API and web page in front of Triton. Build from the root:
#   docker build -f deploy/api.Dockerfile -t shopvision-api:dev .
# It talks to Triton over gRPC ($SHOPVISION_URL) and keeps the catalog in /catalog (a volume or PVC).
FROM python:3.10-slim
LABEL org.opencontainers.image.title="shopvision-api" \
      org.opencontainers.image.description="Visual search API and page for shopvision" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /opt/shopvision
COPY pyproject.toml README.md ./
COPY src ./src
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[api,catalog,feeds]" \
    && useradd --uid 1000 --create-home shopvision \
    && mkdir /catalog && chown 1000:1000 /catalog
USER 1000:1000
WORKDIR /catalog
ENV SHOPVISION_URL=grpc://triton:8001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8080/healthz', timeout=4)"]
# Without $SHOPVISION_CATALOG it indexes a generated demo catalog into /catalog/demo on first start.
ENTRYPOINT ["shopvision", "api", "--host", "0.0.0.0", "--port", "8080", "--demo-dir", "/catalog/demo"]
