"""The dashboard: `GET /` is a page that signs in with an API key and shows the key's labs.

The page is plain HTML and JavaScript from `api/static/`, served by this app, with no build
step. It talks to the `/v1` endpoints like any partner does, with the key kept in the
browser's session storage. The chart library is plotly.js, taken from the `plotly` Python
package (a dependency of livelab), so nothing is fetched from a CDN: the page works on a lab
network without internet access.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PLOTLY_URL = "/vendor/plotly.min.js"

router = APIRouter(include_in_schema=False)


@cache
def _plotly_js() -> tuple[bytes, bytes, str]:
    """plotly.min.js as shipped by the `plotly` package: (plain, gzipped, ETag)."""
    body = resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    # 4.8 MB plain, about a third of that gzipped: compressed once, served many times.
    return body, gzip.compress(body, compresslevel=6, mtime=0), f'"{metadata.version("plotly")}"'


@router.get("/")
async def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})


@router.get(PLOTLY_URL)
async def plotly_js(request: Request) -> Response:
    """plotly.js, gzipped when the browser accepts it."""
    plain, packed, etag = _plotly_js()
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type="text/javascript", headers=headers)
    return Response(plain, media_type="text/javascript", headers=headers)


def install(app: FastAPI) -> None:
    """Serve the page at `/`, its own files under `/static/` and plotly.js."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
