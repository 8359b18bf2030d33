"""The one HTML builder: self-contained pages (the run's report, a comparison) with figures
embedded as PNG data URIs, so a page needs no other file."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td:last-child { font-family: monospace; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""
HTML_DPI = 80
esc = html.escape


def page(title: str, body: Iterable[str]) -> str:
    """A whole HTML document: `title` as its title and first heading, then the `body` parts
    (markup, as `table`, `image` and `text` make it)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        *body,
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table of text, escaped."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(lines) + "\n</table>"


def image(figure: Figure | bytes, alt: str) -> str:
    """A figure (or its PNG bytes, rendered once already) as an inline PNG data URI."""
    png = figure if isinstance(figure, bytes) else _png(figure)
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def render_html(
    title: str,
    settings: Mapping[str, Any],
    final_metrics: Mapping[str, float],
    artifacts: Mapping[str, Figure | bytes | str],
) -> str:
    """A run's report as one self-contained page: final metrics, every artifact inline, then
    the settings folded in a <details>.

    Args:
        settings: shown as a table of key and value (e.g. the run's parameters).
        final_metrics: shown as a table, values to 4 decimals.
        artifacts: as `report` returns them, shown in their order under their file names;
            a figure may come already rendered as PNG bytes, so it is rendered only once.
    """
    body = [
        heading("Final metrics"),
        table(("metric", "value"), [(k, f"{float(v):.4f}") for k, v in final_metrics.items()]),
    ]
    for name, artifact in artifacts.items():
        body.append(heading(name))
        if isinstance(artifact, Figure | bytes):
            body.append(image(artifact, name))
        elif isinstance(artifact, str):
            body.append(f"<pre>{esc(artifact)}</pre>")
        else:
            raise TypeError(f"artifact {name!r} is a {type(artifact).__name__}")
    # The settings (some 40 rows) last and folded: the page opens on the results.
    body += [
        f"<details>\n<summary>Settings ({len(settings)})</summary>",
        table(("setting", "value"), settings.items()),
        "</details>",
    ]
    return page(title, body)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=HTML_DPI)
    return buf.getvalue()
