"""A self-contained HTML report: tables of figures and the PNG pictures inlined (one file to share)."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f4f4f4}.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}
.figs img{max-width:520px;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
code{background:#f4f4f4;padding:0 .2em}
"""


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def table(rows: Iterable[Iterable], header: Iterable[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def figures(paths: Iterable[tuple[str, str]]) -> str:
    """(png path, caption) pairs -> inline images; missing files are named, not hidden."""
    out = ['<div class="figs">']
    for path, caption in paths:
        if os.path.exists(path):
            data = base64.b64encode(open(path, "rb").read()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        else:
            out.append(f"<p>missing picture: <code>{html.escape(path)}</code></p>")
    out.append("</div>")
    return "\n".join(out)


def write_html(path: str, title: str, sections: list[tuple[str, str]]) -> str:
    """Write ``sections`` ((heading, html body) pairs) as one page at ``path``, atomically."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
