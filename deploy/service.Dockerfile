# The forecast service: what `bentoml containerize` would build from bentofile.yaml (it needs a
# Docker daemon at build time), written out: the locked requirements, the service and the
# pure core it imports, OMP_WAIT_POLICY=PASSIVE, `bentoml serve` on port 3000.
# Build from the repository root:
#   docker build -f deploy/service.Dockerfile -t routeaq/service:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_WAIT_POLICY=PASSIVE \
    ROUTEAQ_HOME=/var/lib/routeaq

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/routeaq
RUN pip install --no-cache-dir uv==0.13.9
COPY requirements.lock ./
RUN uv pip sync --system --no-cache requirements.lock

# bentofile.yaml's include list: the service, the package marker, the pure core, the adapters to
# the outside systems and the data.
COPY pyproject.toml README.md bentofile.yaml ./
COPY routeaq_serving ./routeaq_serving
COPY routeaq_assets/__init__.py ./routeaq_assets/__init__.py
COPY routeaq_assets/core ./routeaq_assets/core
COPY routeaq_assets/adapters ./routeaq_assets/adapters
COPY routeaq_assets/data ./routeaq_assets/data
RUN useradd --create-home --uid 10001 routeaq \
    && mkdir -p "$ROUTEAQ_HOME" \
    && chown -R routeaq "$ROUTEAQ_HOME"
USER routeaq

EXPOSE 3000
# The service needs no package install: it runs from the copied sources in WORKDIR.
CMD ["bentoml", "serve", "routeaq_serving.service:RouteAQ", "--host", "0.0.0.0", "--port", "3000"]
