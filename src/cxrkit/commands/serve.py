"""`cxrkit serve (RUN | MODEL.onnx)`: the Gradio page and the REST API on one server."""

from __future__ import annotations

import argparse
import os
import socket

from cxrkit.errors import CxrkitError

TOKEN_VARIABLE = "CXRKIT_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model: Gradio page and REST API on one port",
        description="Serve a run folder or an exported ONNX model: the page at /, the REST API "
                    "at /api/v1 (OpenAPI spec at /openapi.json). Not for clinical use.")
    parser.add_argument("model", help="run folder made by `cxrkit train`, or a .onnx file")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--token", help=f"require this bearer token on the API and as the page "
                                        f"password (default: env {TOKEN_VARIABLE}, else none)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="largest accepted upload, in MB (default 20)")
    parser.add_argument("--examples", help="folder of example images for the page "
                                           "(default: a few test-split images of the run)")
    parser.add_argument("--max-images", type=int, default=32,
                        help="most images in one API request (default 32)")
    parser.add_argument("--max-pixels", type=int, default=4096 * 4096,
                        help="most pixels in one image, checked before decoding (default 4096x4096)")
    parser.add_argument("--max-decodes", type=int, default=2,
                        help="images decoded at once across all requests (default 2)")
    parser.add_argument("--site", metavar="NAME",
                        help="decide at this site operating point of the run (made by "
                             "`cxrkit calibrate --select`)")
    parser.add_argument("--log", metavar="URL",
                        help="silent-mode monitoring: record every scored image (time, model, "
                             "operating point, scores, decision, image sha256; never the image) "
                             "in this SQLite file or database URL; read it with `cxrkit monitor`")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    if args.max_upload_mb <= 0:
        raise CxrkitError(f"--max-upload-mb {args.max_upload_mb}: give a positive size in MB")
    for option in ("max_images", "max_pixels", "max_decodes"):
        if getattr(args, option) < 1:
            raise CxrkitError(f"--{option.replace('_', '-')} {getattr(args, option)}: give a number of 1 or more")
    if not 0 < args.port < 65536:
        raise CxrkitError(f"--port {args.port}: choose a port between 1 and 65535")
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    from cxrkit.extras import require

    require("fastapi", "uvicorn", "python_multipart")
    check_port_free(args.host, args.port)

    import uvicorn

    from cxrkit.serve.app import Limits, build_app

    limits = Limits(max_upload_mb=args.max_upload_mb, max_images=args.max_images,
                    max_pixels=args.max_pixels, concurrent_decodes=args.max_decodes)
    app = build_app(args.model, token=token, limits=limits, examples=args.examples, site=args.site,
                    log=args.log)
    if args.host not in LOOPBACK and token is None:
        print(f"warning: serving on {args.host} without a token: anyone who can reach this "
              f"address can use the model; set --token or {TOKEN_VARIABLE}")
    url = f"http://{args.host}:{args.port}"
    print(f"serving {args.model} at {url}/ (API {url}/api/v1, spec {url}/openapi.json); "
          "press Ctrl+C to stop", flush=True)
    print(f"decision: {app.state.served.point.describe()}", flush=True)
    if args.log:
        print(f"logging every scored image to {args.log} (no images are stored)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Fail early with a clear message when the address cannot be bound."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        reason = error.strerror or str(error)
        raise CxrkitError(f"--host {host} --port {port}: cannot listen there ({reason}); "
                          "choose another --port or stop the program using it") from error
