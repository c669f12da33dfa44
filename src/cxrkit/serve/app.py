"""One FastAPI app: the REST API under /api/v1 and the Gradio page mounted at /."""

from __future__ import annotations

import atexit
import json
import logging
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cxrkit.serve.api import MAX_IMAGES_PER_REQUEST, OPEN_PATHS, PREFIX, build_router, token_matches
from cxrkit.serve.decode import DEFAULT_MAX_PIXELS
from cxrkit.serve.model import DEFAULT_CONCURRENT_DECODES, ServedModel, copy_examples, load_served_model
from cxrkit.version import __version__

DEFAULT_MAX_UPLOAD_MB = 20
DRAIN_LIMIT_BYTES = 64 << 20
logger = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: API request bodies over `max_bytes` get a 413 JSON error.

    With a token, a request without the right bearer token gets its 401 before a byte of its
    body is read. The body is read here (and replayed to the app), so an oversized upload is
    refused whether or not it declares its length, and the connection stays usable afterwards.
    """

    def __init__(self, app, max_bytes: int, prefix: str = PREFIX, token: str | None = None):
        self.app, self.max_bytes, self.prefix, self.token = app, max_bytes, prefix, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if not token_matches(authorization, self.token):
                await _json_error(send, 401, "missing or wrong bearer token; send 'Authorization: "
                                             "Bearer <token>'", [(b"www-authenticate", b"Bearer")])
                return
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _json_error(send, 400, "Content-Length header is not a number")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await _drain(receive, more, size)
                limit_mb = self.max_bytes / (1 << 20)
                await _json_error(send, 413, f"upload is larger than the server's limit of "
                                             f"{limit_mb:g} MB; send smaller or fewer images "
                                             "(the limit is `cxrkit serve --max-upload-mb`)")
                return
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _drain(receive, more: bool, size: int) -> None:
    """Read and drop the rest of a refused body (up to a bound), so the client sees the 413."""
    while more and size < DRAIN_LIMIT_BYTES:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)


async def _json_error(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Limits:
    """What the server accepts: MB per request body, images per request, pixels per image (checked
    before decoding) and images decoded at once."""

    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_images: int = MAX_IMAGES_PER_REQUEST
    max_pixels: int = DEFAULT_MAX_PIXELS
    concurrent_decodes: int = DEFAULT_CONCURRENT_DECODES


def build_app(model_path: str | Path, token: str | None = None, limits: Limits = Limits(),
              examples: str | Path | None = None, site: str | None = None, log: str | None = None):
    """The FastAPI app serving `model_path` (run folder, model.ckpt or .onnx) on one port;
    `site` decides at that site operating point of the run; `log` records every scored image
    in that request log (SQLite path or database URL)."""
    served = load_served_model(model_path, examples, site)
    served.limit_decoding(limits.max_pixels, limits.concurrent_decodes)
    if log is not None:
        from cxrkit.deployment.request_log import RequestLog

        served.request_log = RequestLog(log)
    return build_served_app(served, token, limits)


def build_served_app(served: ServedModel, token: str | None = None, limits: Limits = Limits()):
    """The FastAPI app for an already loaded model; without Gradio (the `ui` extra), API only."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(
        title="cxrkit", version=__version__,
        description=f"Chest X-ray classifier `{served.model_id}` ({', '.join(served.classes)}). "
                    "Not for clinical use.")
    app.include_router(build_router(served, token, limits.max_images))
    app.state.served = served

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); see the "
                                       "server log"}, status_code=500)

    max_bytes = int(limits.max_upload_mb * (1 << 20))
    app.add_middleware(BodyLimit, max_bytes=max_bytes, token=token)
    try:
        import gradio as gr
    except ModuleNotFoundError:
        logger.warning("no web page: it needs the optional package 'gradio': pip install "
                       "'cxrkit[ui]' (the REST API at %s works without it)", PREFIX)
        return app

    from cxrkit.serve.page import build_page

    auth = None
    if token is not None:
        def auth(username: str, password: str) -> bool:
            return secrets.compare_digest(password.encode(), token.encode())
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    # The page may serve only what it generates and copies of the examples in a folder the
    # server owns: never a data folder.
    examples_dir = Path(tempfile.mkdtemp(prefix="cxrkit-examples-"))
    atexit.register(shutil.rmtree, examples_dir, True)
    served.examples = copy_examples(served.examples, examples_dir)
    return gr.mount_gradio_app(
        app, build_page(served), path="/", auth=auth,
        auth_message="Any user name; the password is the server's token.",
        allowed_paths=[str(examples_dir)] if served.examples else [],
        max_file_size=max_bytes, ssr_mode=False, mcp_server=False,
        theme=theme, footer_links=["api", "settings"])


def _validation_message(error) -> str:
    """One line naming the field(s) at fault and what the API expects."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "request"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return ("; ".join(problems) + "; send the image(s) as multipart/form-data field 'images'")
