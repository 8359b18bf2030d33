"""A page to draw a digit on, and the model's answer as one draws.

    python -m pipeline.predict --serve MODEL [--host 127.0.0.1] [--port 8000]

`GET /` is one self-contained page (no outside resources): a canvas drawn on with a mouse, a
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
import sys
import threading

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from pipeline.serving.prepare import ImageError, prepare, read_gray

CANVAS = 280  # the drawing canvas, in pixels (ten times MNIST's 28)
STROKE = 18  # pen width, in canvas pixels
THROTTLE_MS = 150  # at most one request this often while drawing
MAX_BODY = 4 * 1024 * 1024  # bytes of JSON; a 280x280 drawing is a few kilobytes
MAX_SIDE = 4096  # pixels; larger images are refused before they are decoded
DATA_URL_PREFIXES = ("data:image/png;base64,", "data:image/jpeg;base64,")


class DrawingError(ValueError):
    """A request body that is not a PNG or JPEG data URL in `{"image": ...}`."""


STYLE = f"""
:root {{ font-family: system-ui, sans-serif; color: #222; background: #f4f4f4; }}
body {{ margin: 1rem; }}
h1 {{ font-size: 1.2rem; margin: 0 0 0.2rem; }}
.model {{ font-size: 0.8rem; color: #666; margin: 0 0 1rem; overflow-wrap: anywhere; }}
main {{ display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }}
.pad {{ display: flex; flex-direction: column; gap: 0.5rem; }}
#pad {{
  width: {CANVAS}px; max-width: 90vw; aspect-ratio: 1; background: #fff;
  border: 1px solid #999; touch-action: none; user-select: none; -webkit-user-select: none;
  cursor: crosshair;
}}
#clear {{ font-size: 1rem; padding: 0.4rem 1rem; align-self: flex-start; }}
#result {{ min-width: 16rem; }}
.answer {{ display: flex; align-items: center; gap: 1rem; min-height: 5rem; }}
#prediction {{ font-size: 3.5rem; font-weight: bold; min-width: 2ch; }}
#probability {{ font-size: 1.2rem; color: #555; }}
#message {{ color: #666; margin: 0.5rem 0; min-height: 1.2em; }}
#result[data-state="error"] #message {{ color: #b00020; }}
#prepared {{
  width: 112px; height: 112px; image-rendering: pixelated; background: #000;
  border: 1px solid #999;
}}
.figure {{ font-size: 0.8rem; color: #666; }}
#bars {{ display: grid; gap: 0.2rem; margin-top: 0.8rem; }}
.bar {{
  display: grid; grid-template-columns: 6rem 10rem 3.5rem; align-items: center; gap: 0.4rem;
}}
.bar .label {{ text-align: right; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
.bar .track {{ height: 0.9rem; background: #ddd; }}
.bar .fill {{ display: block; height: 100%; background: #777; }}
.bar.top .fill {{ background: #1f5fbf; }}
.bar .value {{ font-size: 0.8rem; color: #555; text-align: right; }}
"""

SCRIPT = f"""
"use strict";
const THROTTLE_MS = {THROTTLE_MS};
const STROKE = {STROKE};
const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const result = document.getElementById("result");
const message = document.getElementById("message");
const prediction = document.getElementById("prediction");
const probability = document.getElementById("probability");
const prepared = document.getElementById("prepared");
const bars = document.getElementById("bars");

let stroke = null;      // the pointer drawing now, and where it was last
let generation = 0;     // Clear starts a new one: answers to older drawings are dropped
let pending = false;    // the canvas changed since it was last sent
let inFlight = false;   // one request at a time
let timer = null;
let lastSent = -Infinity;

function paper() {{
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  pen.strokeStyle = "#000";
  pen.fillStyle = "#000";
  pen.lineWidth = STROKE;
  pen.lineCap = "round";
  pen.lineJoin = "round";
}}

function at(event) {{
  const box = pad.getBoundingClientRect();
  return [
    (event.clientX - box.left) * pad.width / box.width,
    (event.clientY - box.top) * pad.height / box.height,
  ];
}}

function percent(p) {{
  return (100 * p).toFixed(p >= 0.995 || p < 0.1 ? 1 : 0) + "%";
}}

function emptyResult(text, state) {{
  prediction.textContent = "";
  probability.textContent = "";
  bars.replaceChildren();
  prepared.getContext("2d").clearRect(0, 0, prepared.width, prepared.height);
  message.textContent = text;
  result.dataset.state = state;
}}

function show(answer) {{
  const [name, p] = answer.top;
  prediction.textContent = name;
  probability.textContent = percent(p);
  message.textContent = "";
  const picture = prepared.getContext("2d").createImageData(prepared.width, prepared.height);
  answer.prepared.forEach((row, y) => row.forEach((v, x) => {{
    const i = 4 * (y * prepared.width + x);
    picture.data[i] = picture.data[i + 1] = picture.data[i + 2] = v;
    picture.data[i + 3] = 255;
  }}));
  prepared.getContext("2d").putImageData(picture, 0, 0);
  bars.replaceChildren(...answer.classes.map((cls, k) => {{
    const q = answer.probabilities[k];
    const bar = document.createElement("div");
    bar.className = cls === name ? "bar top" : "bar";
    bar.dataset.class = cls;
    bar.dataset.p = String(q);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = cls;
    label.title = cls;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * q).toFixed(1) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(q);
    bar.append(label, track, value);
    return bar;
  }}));
}}

function schedule(now) {{
  pending = true;
  result.dataset.state = "busy";
  if (inFlight) return;  // sent again when the answer comes
  if (timer !== null) {{
    if (!now) return;
    clearTimeout(timer);
  }}
  const wait = now ? 0 : Math.max(0, lastSent + THROTTLE_MS - performance.now());
  timer = setTimeout(send, wait);
}}

async function send() {{
  timer = null;
  if (!pending) return;
  pending = false;
  inFlight = true;
  lastSent = performance.now();
  const mine = generation;
  let answer = null;
  let error = null;
  try {{
    const response = await fetch("predict", {{
      method: "POST",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{image: pad.toDataURL("image/png")}}),
    }});
    answer = await response.json().catch(() => ({{}}));
    if (!response.ok) error = answer.detail || `HTTP ${{response.status}}`;
    else if (!answer.blank && !answer.top) error = "the server's answer holds no prediction";
  }} catch (e) {{
    error = "no answer from the server: " + e.message;
  }}
  inFlight = false;
  if (mine === generation) {{
    if (error !== null) emptyResult("error: " + error, "error");
    else if (answer.blank) emptyResult("draw a digit", "blank");
    else show(answer);
  }}
  if (pending) schedule(stroke === null);
  else if (mine === generation && error === null) {{
    result.dataset.state = answer.blank ? "blank" : "done";
  }}
}}

pad.addEventListener("pointerdown", (event) => {{
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const [x, y] = at(event);
  stroke = {{id: event.pointerId, x, y}};
  pen.beginPath();
  pen.arc(x, y, STROKE / 2, 0, 2 * Math.PI);
  pen.fill();
  schedule(false);
}});

pad.addEventListener("pointermove", (event) => {{
  if (stroke === null || event.pointerId !== stroke.id) return;
  event.preventDefault();
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const move of moves.length ? moves : [event]) {{
    const [x, y] = at(move);
    pen.beginPath();
    pen.moveTo(stroke.x, stroke.y);
    pen.lineTo(x, y);
    pen.stroke();
    stroke.x = x;
    stroke.y = y;
  }}
  schedule(false);
}});

function endStroke(event) {{
  if (stroke === null || event.pointerId !== stroke.id) return;
  stroke = null;
  schedule(true);
}}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {{
  generation += 1;
  pending = false;
  stroke = null;
  if (timer !== null) clearTimeout(timer);
  timer = null;
  paper();
  emptyResult("draw a digit", "empty");
}});

paper();
emptyResult("draw a digit", "empty");
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page may load nothing from anywhere, and talk to this server alone.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


def page(classifier) -> str:
    """The drawing page for `classifier`, everything it needs inline."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Draw a digit</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Draw a digit</h1>
<p class="model">model: {html.escape(classifier.uri)}</p>
<main>
  <section class="pad">
    <canvas id="pad" width="{CANVAS}" height="{CANVAS}"
      aria-label="drawing canvas: draw with a mouse, a pen or a finger"></canvas>
    <button id="clear" type="button">Clear</button>
  </section>
  <section id="result" aria-live="polite" data-state="empty">
    <div class="answer">
      <span id="prediction"></span>
      <span id="probability"></span>
    </div>
    <div id="message">draw a digit</div>
    <canvas id="prepared" width="28" height="28"></canvas>
    <div class="figure">what the model sees (28x28)</div>
    <div id="bars"></div>
  </section>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


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

    def answer(gray: np.ndarray) -> dict:
        try:
            image = prepare(gray, "drawing")
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
    """Serve the drawing page for `classifier` on host:port until interrupted."""
    import uvicorn

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
