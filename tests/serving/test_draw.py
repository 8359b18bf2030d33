"""The drawing page (`pipeline.serving.draw`): its HTML, `POST /predict` on drawn, blank and
malformed images with a stand-in model, `serve`'s words; and, in headless Chromium, a "1" and a
"7" drawn with the mouse and read by a small model trained here on real MNIST.

The `system` test drives Debian's Chromium as tests/tracking/test_ui.py does
(`/usr/bin/chromium`, or $PIPELINE_CHROMIUM); its screenshots go to $PIPELINE_UI_SCREENSHOTS if
set, else into the test's temporary folder.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage

from pipeline.serving.classifier import Classifier
from pipeline.serving.draw import create_app, serve
from tests.helpers.cli import SILENT, make_config
from tests.helpers.services import free_port

DIGITS = tuple("0123456789")
CANVAS = 280
WAIT_MS = 30_000  # every wait on the page


class FakeModel:
    """Stands in for a Keras model: probabilities favouring class 7, and the images it saw."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def predict(self, x, verbose=0):
        self.seen.append(np.array(x))
        probs = np.full((len(x), 10), 0.02, dtype=np.float32)
        probs[:, 7] = 0.82
        return probs


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def client(model: FakeModel) -> Iterator[TestClient]:
    with TestClient(create_app(Classifier(model, DIGITS, "runs:/<abc>/model"))) as c:
        yield c


def data_url(image, fmt: str = "PNG") -> str:
    """A Pillow image as the page sends it: a base64 data URL."""
    out = io.BytesIO()
    image.save(out, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(out.getvalue()).decode()


def stroke_image(mode: str = "L"):
    """A 280x280 canvas with one thick black vertical stroke, off centre, on white."""
    from PIL import Image, ImageDraw

    image = Image.new(mode, (CANVAS, CANVAS), "white")
    ImageDraw.Draw(image).line([(60, 40), (75, 240)], fill="black", width=18)
    return image


# --- the page ---------------------------------------------------------------------------------


def test_page_has_the_canvas_clear_button_and_result_area(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert re.search(r'<canvas id="pad" width="280" height="280"', page)
    assert re.search(r'<button id="clear"[^>]*>Clear</button>', page)
    for element_id in ("result", "prediction", "probability", "prepared", "bars"):
        assert f'id="{element_id}"' in page, element_id
    assert '<canvas id="prepared" width="28" height="28"' in page
    assert "touch-action: none" in page and "image-rendering: pixelated" in page
    for event in ("pointerdown", "pointermove", "pointerup"):
        assert f'"{event}"' in page, event
    assert '"predict"' in page and "toDataURL" in page
    # Self-contained: nothing loaded from anywhere, and the policy says so to the browser.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"\b(src|href)=", page)
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    # The model's URI is shown as text, never as markup.
    assert "runs:/&lt;abc&gt;/model" in page and "<abc>" not in page


def test_the_page_is_its_package_files_inlined_and_allowed_by_its_policy(client) -> None:
    import hashlib
    from importlib import resources

    static = resources.files("pipeline.serving") / "static"
    files = {name: (static / name).read_text() for name in ("draw.html", "draw.css", "draw.js")}
    response = client.get("/")
    page = response.text
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert style == files["draw.css"] and script == files["draw.js"]
    assert "%%" not in page and 'data-stroke="18" data-throttle-ms="150"' in page.replace(
        "\n      ", " "
    )
    # The browser runs the inline script and style only if the policy names their digests.
    policy = response.headers["content-security-policy"]
    for text, directive in ((script, "script-src"), (style, "style-src")):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy


# --- POST /predict ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_predict_reads_a_drawn_stroke(client: TestClient, model: FakeModel, fmt: str) -> None:
    response = client.post("/predict", json={"image": data_url(stroke_image("RGB"), fmt)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["classes"] == list(DIGITS)
    probs = answer["probabilities"]
    assert len(probs) == 10 and sum(probs) == pytest.approx(1.0, abs=1e-6)
    assert answer["top"] == ["7", pytest.approx(0.82)]

    prepared = np.array(answer["prepared"])
    assert prepared.shape == (28, 28)
    assert prepared.min() >= 0 and prepared.max() == 255
    # MNIST's way: white ink on black, 20 pixels tall, the centre of mass at the centre.
    assert prepared[0].max() == prepared[-1].max() == 0
    rows = np.flatnonzero(prepared.max(axis=1) > 64)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21, rows
    cy, cx = ndimage.center_of_mass(prepared.astype(float))
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)
    # The model saw exactly the image the page is sent back.
    (seen,) = model.seen
    assert seen.dtype == np.uint8 and seen.shape == (1, 28, 28)
    np.testing.assert_array_equal(seen[0], prepared)


def test_predict_reads_strokes_on_a_transparent_canvas(client: TestClient) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(140, 40), (140, 240)], fill=(0, 0, 0, 255), width=18)
    answer = client.post("/predict", json={"image": data_url(image)}).json()
    prepared = np.array(answer["prepared"])
    assert prepared.max() > 200  # white ink: the transparent canvas read as white paper
    cy, cx = ndimage.center_of_mass(prepared.astype(float))
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)


@pytest.mark.parametrize("mode", ["white", "transparent"])
def test_a_blank_canvas_is_blank(client: TestClient, model: FakeModel, mode: str) -> None:
    from PIL import Image

    image = (
        Image.new("RGB", (CANVAS, CANVAS), "white")
        if mode == "white"
        else Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    )
    response = client.post("/predict", json={"image": data_url(image)})
    assert response.status_code == 200
    assert response.json() == {"blank": True}
    assert model.seen == []


def _png_of_size(width: int, height: int) -> str:
    from PIL import Image

    return data_url(Image.new("L", (width, height), 255))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1, 2]", id="a-list"),
        pytest.param(json.dumps({"picture": "x"}).encode(), id="no-image-key"),
        pytest.param(json.dumps({"image": 5}).encode(), id="image-not-a-string"),
        pytest.param(json.dumps({"image": "hello"}).encode(), id="not-a-data-url"),
        pytest.param(json.dumps({"image": "data:text/plain;base64,aGk="}).encode(), id="text"),
        pytest.param(
            json.dumps({"image": "data:image/png;base64,@@not base64@@"}).encode(), id="base64"
        ),
        pytest.param(
            json.dumps(
                {"image": "data:image/png;base64," + base64.b64encode(b"GIF89a junk").decode()}
            ).encode(),
            id="not-an-image",
        ),
        pytest.param(json.dumps({"image": _png_of_size(5000, 2)}).encode(), id="too-large"),
    ],
)
def test_malformed_input_is_a_400_with_one_line(
    client: TestClient, model: FakeModel, body: bytes
) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert model.seen == []


# --- serve ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url", "warns"),
    [
        ("127.0.0.1", "http://127.0.0.1:8123/", False),
        ("localhost", "http://localhost:8123/", False),
        ("::1", "http://[::1]:8123/", False),
        ("0.0.0.0", "http://0.0.0.0:8123/", True),
        ("192.168.1.5", "http://192.168.1.5:8123/", True),
    ],
)
def test_serve_prints_its_url_and_warns_off_loopback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    host: str,
    url: str,
    warns: bool,
) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    serve(Classifier(FakeModel(), DIGITS, "models:/mnist-classifier@champion"), host, 8123)
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and url in out, out
    if warns:
        (line,) = err.splitlines()
        assert line.startswith("warning: ") and "anyone who can reach" in line, err
    else:
        assert err == ""
    ((app, kwargs),) = calls
    assert kwargs == {"host": host, "port": 8123, "log_level": "warning"}
    assert {route.path for route in app.routes} >= {"/", "/predict"}


# --- in Chromium, with a model trained on real MNIST -----------------------------------------


def trained_classifier(real_data: Path) -> Classifier:
    """The ANN with Adam, 3 epochs on the first 10,000 MNIST training images (about 10 s)."""
    from pipeline.config.schema import to_config
    from pipeline.data.load import load
    from pipeline.data.preprocess import preprocess
    from pipeline.models.build import build
    from pipeline.training.backend import keras
    from pipeline.training.fit import fit, steps_per_execution

    conf = to_config(
        make_config(
            [
                "model=ann",
                "optimizer=adam",
                f"dataset.path='{real_data}'",
                "dataset.limit=10000",
                "trainer.epochs=3",
                "trainer.validation_split=0",
                SILENT,
            ]
        )
    )
    keras.utils.set_random_seed(conf.seed)
    splits = preprocess(load(conf.dataset), conf.trainer.validation_split)
    spe = steps_per_execution(conf.trainer, len(splits.train))
    model = build(conf.model, conf.optimizer, (28, 28), 10, spe)
    fit(conf.trainer, model, splits)
    return Classifier(model, DIGITS, "test")


@contextmanager
def served(app, timeout: float = 30) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# Strokes in canvas pixels (280x280), each drawn with the mouse button held.
ONE = [[(140, 45), (140, 235)]]
SEVEN = [[(70, 55), (210, 55), (115, 235)]]


@pytest.mark.system
def test_drawn_digits_are_read_in_chromium(chromium: str, real_data: Path, shots: Path) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    classifier = trained_classifier(real_data)
    with served(create_app(classifier)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            # A script the policy blocks, or one that fails, logs an error.
            page.on("console", lambda m: m.type == "error" and problems.append(f"console {m.text}"))
            page.goto(url)
            pad = page.locator("#pad")
            result = page.locator("#result")
            prediction = page.locator("#prediction")
            bars = page.locator("#bars .bar")
            expect(result).to_have_attribute("data-state", "empty")
            box = pad.bounding_box()
            scale = box["width"] / CANVAS

            def draw(strokes) -> None:
                for points in strokes:
                    x, y = points[0]
                    page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
                    page.mouse.down()
                    for x, y in points[1:]:
                        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=20)
                    page.mouse.up()

            def prepared_ink() -> int:
                return page.evaluate(
                    """() => {
                        const c = document.getElementById("prepared");
                        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                        let ink = 0;
                        for (let i = 0; i < d.length; i += 4) ink += d[i];
                        return ink;
                    }"""
                )

            for digit, strokes in (("1", ONE), ("7", SEVEN)):
                shot = shots / f"draw-{digit}.png"
                try:
                    page.locator("#clear").click()
                    expect(result).to_have_attribute("data-state", "empty")
                    expect(prediction).to_have_text("")
                    expect(bars).to_have_count(0)
                    assert prepared_ink() == 0
                    draw(strokes)
                    expect(result).to_have_attribute("data-state", "done")
                    probs = {
                        bar.get_attribute("data-class"): float(bar.get_attribute("data-p"))
                        for bar in bars.all()
                    }
                    page.screenshot(path=str(shot))
                    expect(prediction).to_have_text(digit)
                    expect(bars).to_have_count(10)
                    assert list(probs) == list(DIGITS)
                    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
                    assert max(probs, key=probs.get) == digit, probs
                    expect(page.locator(f'#bars .bar.top[data-class="{digit}"]')).to_have_count(1)
                    expect(page.locator("#probability")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
                    assert prepared_ink() > 0
                except (AssertionError, PlaywrightError) as e:
                    failed = shots / f"FAILED_draw-{digit}.png"
                    page.screenshot(path=str(failed))
                    pytest.fail(f'drawing a "{digit}" at {url}: {e}\n(screenshot: {failed})')
            assert problems == []
            assert all(r.startswith(url) for r in requests), requests
            assert f"{url}predict" in requests
        finally:
            browser.close()
