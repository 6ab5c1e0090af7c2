# One image per role, from one file: the services (migrate, ingest, api) install only what
# they import; the simulator image adds the `sim` extra (click, httpx). docker-compose.yml
# builds both: EXTRAS="" (default) for the services, EXTRAS="[sim]" for the simulator.
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# `pip install .` also brings the dashboard: api/static/ and plotly.js (in the plotly package).
RUN pip install ".${EXTRAS}" \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin livelab

WORKDIR /
USER livelab
EXPOSE 8000 8081
CMD ["livelab-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
