# The example shop (example_project) with ecotone_django: one image for the web process and the workers.
#   docker compose --profile example up --build      (see docker-compose.yml)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# mysqlclient is compiled against libmariadb; psycopg comes as a binary wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libmariadb-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so that editing the example does not reinstall them.
COPY pyproject.toml README.md ./
COPY ecotone_django ./ecotone_django
# metrics + the OpenTelemetry SDK, exporter and instrumentations: traces to Jaeger, metrics to Prometheus
RUN pip install ".[postgres,mysql,redis,example,metrics]" opentelemetry-exporter-otlp-proto-http \
    opentelemetry-instrumentation-django opentelemetry-instrumentation-psycopg

COPY manage.py ./
COPY example_project ./example_project

RUN useradd --create-home --uid 1000 shop && mkdir -p /app/var && chown shop /app/var
USER shop

EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000"]
