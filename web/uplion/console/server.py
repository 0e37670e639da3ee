"""The console's HTTP server (aiohttp): one handler answers every path from the AssetStore with the
headers `headers.py` decides; /healthz and /readyz for probes."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from .assets import AssetStore
from .files import Kind, choose
from .headers import SECURITY_HEADERS, accepts_gzip, cache_control

log = logging.getLogger("uplion.console")

REQUESTS = Counter("uplion_console_requests_total", "HTTP requests answered", ["kind", "status"])
LATENCY = Histogram(
    "uplion_console_request_seconds", "Time to answer a request", buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0)
)

STORE_KEY = web.AppKey("store", AssetStore)
READY_KEY = web.AppKey("ready", dict[str, bool])


def error_response(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response (errors included) leaves with the security headers."""
    start = time.perf_counter()
    resp: web.StreamResponse
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        resp = e
    resp.headers.update(SECURITY_HEADERS)
    LATENCY.observe(time.perf_counter() - start)
    return resp


async def serve_path(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        REQUESTS.labels("method", "405").inc()
        resp = error_response(405, f"{request.method} is not allowed here", "method_not_allowed")
        resp.headers["Allow"] = "GET, HEAD"
        return resp
    store = request.app[STORE_KEY]
    choice = choose(request.raw_path, store.names)
    if choice.kind is Kind.API:
        REQUESTS.labels("api", "404").inc()
        return error_response(404, "API paths are served by the edge, not by the console", "not_found")
    if choice.kind is Kind.NOT_FOUND or choice.rel_path not in store.assets:
        REQUESTS.labels("not_found", "404").inc()
        resp = error_response(404, "no such file", "not_found")
        resp.headers["Cache-Control"] = "no-cache"
        return resp
    asset = store.assets[choice.rel_path]
    kind = choice.kind.value
    headers = {
        "Cache-Control": cache_control(asset.rel_path, choice.kind is Kind.INDEX),
        "ETag": asset.etag,
        "Content-Type": asset.content_type,
    }
    if asset.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    if asset.etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        REQUESTS.labels(kind, "304").inc()
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    body = asset.read()
    if asset.gzipped is not None and accepts_gzip(request.headers.get("Accept-Encoding")):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    REQUESTS.labels(kind, "200").inc()
    return web.Response(body=body, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY_KEY]["ready"]:
        return web.json_response({"status": "ready"}, headers={"Cache-Control": "no-store"})
    return web.json_response({"status": "draining"}, status=503, headers={"Cache-Control": "no-store"})


def make_app(store: AssetStore) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=1024)
    app[STORE_KEY] = store
    app[READY_KEY] = {"ready": True}
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_route("*", "/{tail:.*}", serve_path)
    return app
