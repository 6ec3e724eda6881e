# flightlake: Arrow Flight (and Flight SQL) on 8815, the HTTP /v1 shim and web console on 3110.
#
#   docker build -t flightlake .
#   docker run --rm -p 127.0.0.1:8815:8815 -p 127.0.0.1:3110:3110 -e FLIGHTLAKE_INSECURE=1 flightlake
#
# Every dependency is installed at the exact version in constraints.txt (the versions CI
# tests). docker-compose.yml runs this image beside MinIO; tests/test_deploy.py checks this
# file's wiring (base image, non-root user, ports, health check).

# -- build: a virtualenv with flightlake and its pinned dependencies -----------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/flightlake
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY flightlake ./flightlake
RUN /opt/flightlake/bin/pip install -c constraints.txt .

# -- runtime: the virtualenv only, run by an unprivileged user ----------------------------
FROM python:3.11-slim
ENV PATH=/opt/flightlake/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed numeric uid/gid, so volume permissions and Kubernetes' runAsNonRoot can rely on it.
RUN groupadd --system --gid 10001 flightlake \
 && useradd --system --uid 10001 --gid 10001 --home-dir /srv/flightlake \
        --shell /usr/sbin/nologin flightlake \
 && mkdir -p /srv/flightlake/conf /var/lib/flightlake/spool \
 && chown -R 10001:10001 /srv/flightlake /var/lib/flightlake
COPY --from=build /opt/flightlake /opt/flightlake
# The working directory is where the defaults point: conf/flightlake.toml,
# conf/secrets.toml and ./flightlake-data (local storage, when FLIGHTLAKE_STORAGE is unset).
WORKDIR /srv/flightlake
USER 10001:10001
EXPOSE 8815 3110
# /health answers 200 once the catalog is loaded and Flight is serving.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FLIGHTLAKE_HTTP_PORT', '3110') + '/health', timeout=4)"]
# Flags beat FLIGHTLAKE_* variables: to bind another address, override the command.
CMD ["flightlake", "serve", "--host", "0.0.0.0"]
