# Locust with shopvision's locustfile and its own requirements (see benchmarks/locust-requirements.txt).
FROM locustio/locust:2.32.2
USER root
COPY pyproject.toml README.md /app/
COPY src /app/src
COPY benchmarks /app/benchmarks
RUN pip install --no-cache-dir -r /app/benchmarks/locust-requirements.txt \
    && pip install --no-cache-dir --no-deps /app
USER locust
WORKDIR /app
