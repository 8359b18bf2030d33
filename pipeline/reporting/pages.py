"""The one HTML builder: self-contained pages (the run's report, a comparison) with figures
embedded as PNG data URIs, so a page needs no other file."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    esc = html.escape
    lines = [f"<table>\n<tr><th>{esc(header[0])}</th><th>{esc(header[1])}</th></tr>"]
    lines += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows]
    return "\n".join(lines) + "\n</table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td:last-child { font-family: monospace; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def render_html(
    title: str,
    settings: Mapping[str, Any],
    final_metrics: Mapping[str, float],
    artifacts: Mapping[str, Figure | bytes | str],
) -> str:
    """One self-contained HTML page: final metrics, every artifact inline, then the settings
    folded in a <details>.

    Figures are embedded as base64 PNG data URIs and texts as <pre> blocks, so the page needs
    no other file and no network.

    Args:
        settings: shown as a table of key and value (e.g. the run's parameters).
        final_metrics: shown as a table, values to 4 decimals.
        artifacts: as `report` returns them, shown in their order under their file names;
            a figure may come already rendered as PNG bytes, so it is rendered only once.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        "<h2>Final metrics</h2>",
        _table(
            [(str(k), f"{float(v):.4f}") for k, v in final_metrics.items()], ("metric", "value")
        ),
    ]
    for name, artifact in artifacts.items():
        parts.append(f"<h2>{esc(name)}</h2>")
        if isinstance(artifact, Figure | bytes):
            png = artifact if isinstance(artifact, bytes) else _png(artifact)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{esc(name)}">')
        elif isinstance(artifact, str):
            parts.append(f"<pre>{esc(artifact)}</pre>")
        else:
            raise TypeError(f"artifact {name!r} is a {type(artifact).__name__}")
    # The settings (some 40 rows) last and folded: the page opens on the results.
    parts += [
        f"<details>\n<summary>Settings ({len(settings)})</summary>",
        _table([(str(k), str(v)) for k, v in settings.items()], ("setting", "value")),
        "</details>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


HTML_DPI = 80


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=HTML_DPI)
    return buf.getvalue()
