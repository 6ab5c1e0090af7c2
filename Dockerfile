# One image for every livelab process (migrate, ingest, api, simulator); docker-compose.yml
# picks the command. Build: docker compose build
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# `pip install .` also brings the dashboard: api/static/ and plotly.js (in the plotly package).
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin livelab

WORKDIR /
USER livelab
EXPOSE 8000 8081
CMD ["livelab-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
