"""A page to draw a digit on, and the model's answer as one draws.

    python -m pipeline.predict --serve MODEL [--host 127.0.0.1] [--port 8000]

`GET /` is one self-contained page (no outside resources; its HTML, CSS and JavaScript are the
files in `static/`): a canvas drawn on with a mouse, a
pen or a finger, a Clear button, and the result: the likeliest class and its probability, the
image as the model saw it (28x28, prepared as MNIST's digits were by `serving.prepare`) and a
probability bar per class. While one draws, the page sends the canvas as a PNG to
`POST /predict` at most every THROTTLE_MS, and once more when the stroke ends:

    {"image": "data:image/png;base64,..."}
    -> {"classes": [...], "probabilities": [...], "prepared": [[28 ints] x 28], "top": [name, p]}

A canvas without ink answers `{"blank": true}`; a body that is not such an image answers 400
with a one-line `detail`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import io
import ipaddress
import json
import string
import sys
import threading
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from pipeline.data.images import to_array
from pipeline.serving.prepare import ImageError, prepare, read_gray

CANVAS = 280  # the drawing canvas, in pixels (ten times MNIST's 28)
STROKE = 18  # pen width, in canvas pixels
THROTTLE_MS = 150  # at most one request this often while drawing
MAX_BODY = 4 * 1024 * 1024  # bytes of JSON; a 280x280 drawing is a few kilobytes
MAX_SIDE = 4096  # pixels; larger images are refused before they are decoded
DATA_URL_PREFIXES = ("data:image/png;base64,", "data:image/jpeg;base64,")


class DrawingError(ValueError):
    """A request body that is not a PNG or JPEG data URL in `{"image": ...}`."""


class _Page(string.Template):
    delimiter = "%%"  # `$` is JavaScript's; the page's blanks are `%%name`


def _static(name: str) -> str:
    return resources.files("pipeline.serving").joinpath("static", name).read_text("utf-8")


# The page's style and script, inlined into it: the page loads nothing else.
STYLE = _static("draw.css")
SCRIPT = _static("draw.js")
PAGE = _Page(_static("draw.html"))


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page may load nothing from anywhere, and talk to this server alone.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


def page(classifier) -> str:
    """The drawing page for `classifier`, everything it needs inline."""
    return PAGE.substitute(
        style=STYLE,
        script=SCRIPT,
        model=html.escape(classifier.uri),
        canvas=CANVAS,
        stroke=STROKE,
        throttle_ms=THROTTLE_MS,
    )


def decode(body: bytes) -> np.ndarray:
    """The drawing in a request body as grayscale 0..255.

    Raises:
        DrawingError: the body is not `{"image": "data:image/png;base64,..."}` (or JPEG) holding
            an image Pillow can read, at most MAX_SIDE pixels a side.
    """
    from PIL import Image, UnidentifiedImageError

    if len(body) > MAX_BODY:
        raise DrawingError(f"request body over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DrawingError("request body is not JSON") from exc
    image = data.get("image") if isinstance(data, dict) else None
    if not isinstance(image, str):
        raise DrawingError('expected JSON {"image": "data:image/png;base64,..."}')
    prefix = next((p for p in DATA_URL_PREFIXES if image.startswith(p)), None)
    if prefix is None:
        raise DrawingError("image is not a data:image/png;base64 (or image/jpeg) URL")
    try:
        raw = base64.b64decode(image[len(prefix) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DrawingError("image is not valid base64") from exc
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DrawingError("image is not a PNG or JPEG Pillow can read") from exc
    if max(width, height) > MAX_SIDE:
        raise DrawingError(f"image of {width}x{height} pixels: at most {MAX_SIDE} a side")
    try:
        return read_gray(io.BytesIO(raw))
    except ImageError as exc:
        raise DrawingError("image is not a PNG or JPEG Pillow can read") from exc


def create_app(classifier) -> FastAPI:
    """The drawing page (`GET /`) and its predictions (`POST /predict`) for `classifier`."""
    app = FastAPI(title="Draw a digit", docs_url=None, redoc_url=None, openapi_url=None)
    html_page = page(classifier)
    names = list(classifier.class_names)
    lock = threading.Lock()  # one prediction at a time: requests run in a thread pool
    how = classifier.preparation

    def prepared(gray: np.ndarray) -> np.ndarray:
        """The drawing as the model's training images were made."""
        if how.mnist_centre:
            return prepare(gray, "drawing")
        from PIL import Image

        return to_array(
            Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)), how.size, how.channels
        )

    def answer(gray: np.ndarray) -> dict:
        try:
            image = prepared(gray)
        except ImageError:
            return {"blank": True}
        with lock:
            probs = classifier.probabilities(image[None])[0]
        best = int(np.argmax(probs))
        return {
            "classes": names,
            "probabilities": [float(p) for p in probs],
            "prepared": image.tolist(),
            "top": [names[best], float(probs[best])],
        }

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(
            html_page,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Cache-Control": "no-store",
            },
        )

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            gray = await run_in_threadpool(decode, body)
        except DrawingError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(await run_in_threadpool(answer, gray))

    return app


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(classifier, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the drawing page for `classifier` on host:port until interrupted.

    Raises:
        PortInUseError: host:port is taken; nothing is printed and no server started.
    """
    import uvicorn

    from pipeline.cli.port import check_free

    check_free(host, port, "--port {port}")
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    print(f"Draw a digit at http://{shown}:{port}/ (model {classifier.uri}; Ctrl+C to stop)")
    if not is_loopback(host):
        print(
            f"warning: serving on {host}, not a loopback address: anyone who can reach "
            f"{shown}:{port} can use the model",
            file=sys.stderr,
        )
    sys.stdout.flush()
    uvicorn.run(create_app(classifier), host=host.strip("[]"), port=port, log_level="warning")
