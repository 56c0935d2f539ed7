"""GET /: the web playground, a static page (committed HTML, CSS and JavaScript; no
build step) that calls the REST API from the browser. The page itself holds no data,
so it is open; its API calls carry the key typed into it, like any client's."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PLAYGROUND_DIR = Path(__file__).resolve().parent.parent / "playground"
# Only the page's own files may load or be called; it may not be framed elsewhere.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(PLAYGROUND_DIR / "index.html", headers=HEADERS)


def mount_playground(app: FastAPI) -> None:
    """The page at / and its scripts and styles under /playground/."""
    app.include_router(router)
    app.mount("/playground", StaticFiles(directory=PLAYGROUND_DIR), name="playground")
