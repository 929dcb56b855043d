"""Parts of one self-contained HTML page: tables, inline PNG pictures, short ids with the full id on hover.

Nothing here knows what the page is about (``speechid.app.report`` composes the demo's report from them).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable

from speechid.embedding_table import SHORT_ID

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:2.2em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin-top:1.4em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;max-width:100%}
.figs img{width:540px;max-width:100%;height:auto;border:1px solid #eee}
.figs.three img{width:540px}
figcaption{font-size:.9em;color:#555;max-width:min(540px,100%)}code{background:#f4f4f4;padding:0 .2em;
overflow-wrap:anywhere}pre{white-space:pre-wrap;overflow-wrap:anywhere}
.id{font-family:ui-monospace,monospace;border-bottom:1px dotted #999;cursor:help}
.answer{display:flex;flex-wrap:wrap;gap:1em}.card{flex:1 1 min(420px,100%);box-sizing:border-box;
border:1px solid #ccc;border-radius:6px;padding:.8em 1.1em;background:#fafafa;min-width:0}.card h3{margin-top:0}
.big{font-size:1.8em;font-weight:600}
.card ul{padding-left:1.2em}.ok{border-left:6px solid #2a2}.warn{border-left:6px solid #e90}
.bad{border-left:6px solid #d33}
.bar{display:inline-block;height:.8em;background:#7aa7d8;vertical-align:middle}
"""


def short_id(value, n: int = SHORT_ID) -> str:
    """An id as HTML: its first ``n`` characters (``embedding_table.SHORT_ID``), the whole id on hover."""
    s = "" if value is None else str(value)
    if len(s) <= n:
        return html.escape(s)
    return f'<span class="id" title="{html.escape(s)}">{html.escape(s[:n])}…</span>'


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


def pct(x, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%" if finite(x) else "n/a"


class Raw(str):
    """A table cell that is already HTML (ids with hover text, bars)."""


def _cell(v) -> str:
    if isinstance(v, Raw):
        return f"<td>{v}</td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int):
        return f'<td class="num">{v:,}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def table(rows: Iterable[Iterable], header: Iterable[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(_cell(c) for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(data: bytes, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def figures(items: Iterable[tuple[str | bytes, str]], css: str = "figs") -> str:
    """(PNG path or PNG bytes, caption) pairs -> inline images; missing files are named, not hidden."""
    out = [f'<div class="{css}">']
    for src, caption in items:
        if isinstance(src, bytes):
            out.append(_img(src, caption))
        elif os.path.exists(src):
            with open(src, "rb") as f:
                out.append(_img(f.read(), caption))
        else:
            out.append(f"<p>missing picture: <code>{html.escape(src)}</code></p>")
    out.append("</div>")
    return "\n".join(out)


def write_html(path: str, title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    """Write ``sections`` ((heading, html body) pairs) as one page at ``path``, atomically."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    sub = f'<p class="sub">{subtitle}</p>' if subtitle else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{sub}\n{body}\n</body></html>\n"
    )
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend: pictures drawn to bytes, never to a screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # no axis label cut at the edge
    plt.close(fig)
    return buf.getvalue()
