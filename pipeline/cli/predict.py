"""Predict the digits (or clothes) in your own images with a trained model.

    python -m pipeline.predict MODEL IMAGE... [--json] [--out DIR]
    python -m pipeline.predict --serve MODEL [--host 127.0.0.1] [--port 8000]

MODEL is `models:/mnist-classifier@champion`, `runs:/<run id>/model`, or a run id. Images are
PNG or JPEG files, or folders of them; each is prepared as MNIST's digits were
(`pipeline.serving.prepare`) before the model sees it. An image that cannot be read (not an
image, too large or too small, no ink) is named on stderr in one `error:` line and the others are
answered; the exit code is then 1. `--serve` starts a page to draw a digit on.
The store is `$MLFLOW_TRACKING_URI`, else the project's own (as `python -m pipeline` uses).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli.failure import fail
from pipeline.errors import PipelineError
from pipeline.serving.classifier import figure, load_classifier, predict_files, top
from pipeline.serving.prepare import image_files


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit code: 0, or 1 when anything failed (each image that could
    not be read named on stderr, the others answered)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description="Predict the class of your own images (prepared as MNIST's digits were) "
        "with a trained model, or serve a page to draw a digit on.",
    )
    parser.add_argument("model", help="models:/NAME@ALIAS, runs:/RUN_ID/model, or a run id")
    parser.add_argument("images", nargs="*", help="PNG or JPEG files, or folders of them")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument("--out", type=Path, help="write predictions.png (images and bars) here")
    parser.add_argument("--serve", action="store_true", help="serve a page to draw a digit on")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not args.serve and not args.images:
        parser.error("give at least one IMAGE, or --serve")
    failed: list[Path] = []

    def skip(path: Path, exc: PipelineError) -> None:
        """An image that cannot be prepared: one line on stderr, and the others go on."""
        fail(exc)
        failed.append(path)

    try:
        if not args.serve:
            image_files(args.images)  # a wrong path fails before the model loads
        classifier = load_classifier(args.model)
        if args.serve:
            from pipeline.serving.draw import serve

            serve(classifier, args.host, args.port)
            return 0
        files, images, probs = predict_files(classifier, args.images, on_error=skip)
    except PipelineError as exc:
        return fail(exc)
    report(classifier, files, probs, args.json)
    if args.out is not None and len(files):
        args.out.mkdir(parents=True, exist_ok=True)
        names = [p.name for p in files]
        ink = classifier.preparation.mnist_centre
        fig = figure(images, probs, classifier.class_names, names, ink_on_black=ink)
        fig.savefig(args.out / "predictions.png", dpi=90)
        if not args.json:
            print(f"figure: {args.out / 'predictions.png'}")
    return 1 if failed else 0


def report(classifier, files: list[Path], probs, as_json: bool) -> None:
    """Each image's three likeliest classes on stdout, as text or one JSON object a line."""
    for path, p in zip(files, probs, strict=True):
        best = top(p, classifier.class_names)
        if as_json:
            print(json.dumps({"image": str(path), "top": [[n, round(v, 6)] for n, v in best]}))
        else:
            print(f"{path}: " + ", ".join(f"{n} {100 * v:.1f}%" for n, v in best))


if __name__ == "__main__":
    sys.exit(main())
