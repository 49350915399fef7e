"""The explorer's HTTP routes (Starlette).  Every answer is JSON except the page itself,
its two static files, the event stream and the model download.

- ``GET /``, ``GET /static/{app.js,maps.js,style.css}``: the page (package data;
  only these names are served, no path from the client reaches the file system);
- ``GET /api/info``: the networks held (spec, activation, layers, source);
- ``POST /api/forward`` ``{"image", "label"?, "net"?}``: the trace of one image
  (:func:`convprop.explore.payload.trace_payload`);
- ``GET /api/random``: a random test image of the bundled sample and its label;
- ``POST /api/train/start`` (settings), ``POST /api/train/stop``, ``GET
  /api/train/events?job=N`` (server-sent events; closing it stops the job);
- ``GET /api/model.npz?net=live``: the network as a model file.

Bodies over :data:`~convprop.explore.payload.MAX_BODY` bytes are refused with 413;
a refused request gets ``{"error": "..."}`` and a 4xx status.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from convprop.errors import ConvpropError
from convprop.explore import payload
from convprop.explore.payload import MAX_BODY, ApiError, dumps
from convprop.explore.state import Explorer
from convprop.explore.training import start_job
from convprop.interop.model import save_model

STATIC = {"app.js": "text/javascript; charset=utf-8", "maps.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status, media_type="application/json",
                    headers=SECURITY_HEADERS)


def _static_text(name: str) -> bytes:
    return (files("convprop.explore") / "static" / name).read_bytes()


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes, whether or
    not a Content-Length announced it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError("bad Content-Length header", 400)
        if int(declared) > limit:
            raise ApiError(f"request body of {declared} bytes is over the limit of {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def check_origin(request: Request) -> None:
    """A browser's cross-site POST (another web page the user has open) is refused: its
    Origin header names a different host:port than the request's own Host."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if origin.split("://", 1)[-1].rstrip("/") != request.headers.get("host", ""):
        raise ApiError("cross-origin request refused", 403)


def create_app(explorer: Explorer, allowed_hosts: Sequence[str] | None = LOCAL_NAMES
               ) -> Starlette:
    """The ASGI app serving ``explorer``.  ``allowed_hosts``: the names the Host header may
    give (default: this machine's loopback names, which also defeats DNS rebinding);
    None accepts any (a server bound to another address)."""
    page = {name: _static_text(name) for name in ("index.html", *STATIC)}

    async def index(request: Request) -> Response:
        return Response(page["index.html"], media_type="text/html; charset=utf-8",
                        headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise ApiError(f"no such file: {name[:40]}", 404)
        return Response(page[name], media_type=STATIC[name], headers=SECURITY_HEADERS)

    async def info(request: Request) -> Response:
        job = explorer.job
        return _json({"networks": explorer.info(),
                      "job": None if job is None else {"id": job.id, "done": job.done}})

    async def forward(request: Request) -> Response:
        check_origin(request)
        body = payload.parse_json(await read_body(request))
        x = payload.parse_image(body.get("image"))
        label = payload.parse_label(body.get("label"))
        slot = explorer.slot(body.get("net"))

        def compute() -> bytes:
            with slot.lock:
                result = payload.trace_payload(slot.net, x, label)
            result["net"] = body.get("net") or "main"
            return dumps(result)

        return Response(await run_in_threadpool(compute), media_type="application/json",
                        headers=SECURITY_HEADERS)

    async def random_image(request: Request) -> Response:
        image, label, index = explorer.random_test_image()
        return _json({"image": image.astype("float32"), "label": label, "index": index})

    async def train_start(request: Request) -> Response:
        check_origin(request)
        body = payload.parse_json(await read_body(request))
        job = start_job(explorer, body)
        return _json({"job": job.id, "settings": job.settings})

    async def train_stop(request: Request) -> Response:
        check_origin(request)
        await read_body(request, 10_000)
        job = explorer.job
        if job is not None:
            job.stop()
        return _json({"stopped": job is not None and not job.done})

    async def train_events(request: Request) -> Response:
        job = explorer.job
        wanted = request.query_params.get("job", "")
        if job is None or str(job.id) != wanted:
            raise ApiError(f"no training job {wanted[:12]!r}", 404)

        async def stream():
            sent = 0
            job.attach()  # here, so that the finally below always pairs with it
            try:
                while True:
                    events = await run_in_threadpool(job.since, sent, 1.0)
                    for event in events:
                        yield b"data: " + dumps(event) + b"\n\n"
                    sent += len(events)
                    if job.done and sent >= len(job.events):
                        break
                    if not events:
                        yield b": waiting\n\n"
            finally:
                job.detach()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"})

    async def model_file(request: Request) -> Response:
        slot = explorer.slot(request.query_params.get("net") or "main")

        def write() -> bytes:
            with tempfile.TemporaryDirectory(prefix="convprop-explore-") as tmp:
                path = Path(tmp) / "model.npz"
                with slot.lock:
                    save_model(slot.net, path, summary={"test_error": slot.test_error,
                                                        "source": slot.source})
                return path.read_bytes()

        data = await run_in_threadpool(write)
        return Response(data, media_type="application/octet-stream", headers={
            **SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="model.npz"'})

    async def api_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            return _json({"error": str(exc)}, exc.status)
        if isinstance(exc, HTTPException):
            return _json({"error": exc.detail}, exc.status_code)
        return _json({"error": str(exc)}, 422)

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/info", info),
        Route("/api/forward", forward, methods=["POST"]),
        Route("/api/random", random_image),
        Route("/api/train/start", train_start, methods=["POST"]),
        Route("/api/train/stop", train_stop, methods=["POST"]),
        Route("/api/train/events", train_events),
        Route("/api/model.npz", model_file),
    ]
    handlers = {ConvpropError: api_error, HTTPException: api_error}
    middleware = [] if allowed_hosts is None else [
        Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
    app.state.explorer = explorer
    return app
