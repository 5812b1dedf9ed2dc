"""Serves the console: index.html at ``/`` and every ``/console/...`` page, assets under ``/console/assets/``.

Every asset comes from this package (no CDN): the console works offline and in closed networks.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from services.lib.common.errors import not_found

STATIC = Path(__file__).parent / "static"
# Assets revalidate on every load (ETag / Last-Modified answer 304): upgrades show at once.
_REVALIDATE = {"Cache-Control": "no-cache"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json",
          ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".png": "image/png",
          ".ico": "image/x-icon"}

router = APIRouter(include_in_schema=False)


def _index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=_REVALIDATE)


@router.get("/")
async def root():
    return _index()


@router.get("/favicon.ico")
async def favicon():
    return FileResponse(STATIC / "favicon.svg", media_type=_TYPES[".svg"], headers=_REVALIDATE)


@router.get("/console")
async def console_root():
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/assets/{path:path}")
async def asset(path: str):
    target = (STATIC / path).resolve()
    # Only files inside static/ are served: no '..' escapes, no directory listings.
    if not target.is_relative_to(STATIC.resolve()) or not target.is_file():
        raise not_found("asset", path)
    return FileResponse(target, media_type=_TYPES.get(target.suffix, "application/octet-stream"),
                        headers=_REVALIDATE)


@router.get("/console/{page:path}")
async def page(page: str):
    # History-API routing: every console URL is the same page; the app renders the route.
    return _index()
