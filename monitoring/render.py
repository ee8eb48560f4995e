"""HTML pages with matplotlib PNG plots (embedded as data URIs and also written beside the page)."""

from __future__ import annotations

import base64
import contextlib
import html
import importlib
import io
import math
import threading
import time
from pathlib import Path


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, path: Path) -> str:
    """Write ``fig`` as PNG to ``path`` and return it as a base64 data URI; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt().close(fig)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "data:image/png;base64," + base64.b64encode(data).decode()


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def page(title: str, sections: list[tuple[str, str]], intro: str = "") -> str:
    css = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
           "img{max-width:100%;margin:.5em 0}.alarm{color:#b00;font-weight:bold}.ok{color:#070}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>{intro}"]
    parts += [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)


class Stages:
    """Seconds spent per stage (``laps``: {stage: seconds}), for the summary."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 2)
        self._last = now


def warm_imports(*modules: str | None) -> threading.Thread:
    """Import ``modules`` (None skipped; ``"matplotlib.pyplot"`` with the Agg backend) in a
    background thread and return it: the heavy imports (Evidently ~7 s of CPU, matplotlib ~1 s)
    overlap the read of the decision log, whose SQLite steps release the GIL. Join it before use;
    an import that fails here is simply retried (and reported) by the code that needs it."""

    def run() -> None:
        for name in modules:
            if name is None:
                continue
            with contextlib.suppress(Exception):  # the real import reports it
                plt() if name == "matplotlib.pyplot" else importlib.import_module(name)

    thread = threading.Thread(target=run, name="warm-imports", daemon=True)
    thread.start()
    return thread
