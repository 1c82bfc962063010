# Locust with shopvision's locustfile. Only tritonclient's gRPC half is installed: its HTTP half pins
# geventhttpclient<=2.0.2, below what Locust needs; the HTTP user speaks the KServe protocol itself.
FROM locustio/locust:2.32.2
USER root
COPY pyproject.toml README.md /app/
COPY client /app/client
COPY benchmarks /app/benchmarks
RUN pip install --no-cache-dir "tritonclient[grpc]==2.51.0" "numpy==1.26.4" "Pillow==11.0.0" \
    && pip install --no-cache-dir --no-deps /app
USER locust
WORKDIR /app
