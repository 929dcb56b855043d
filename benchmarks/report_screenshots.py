"""Screenshots of a report page at a desktop and a phone width, and a check that nothing is cut.

    python benchmarks/report_screenshots.py demo-work/report.html --output shots/

Needs a Chromium on PATH (``apt-get install chromium``; a developer's check, never the product's or the
tests'). For each width (1400 and 420 px by default) it writes ``report-<width>.png`` and loads the page
once more with a probe that lists every element whose right edge passes the window (text, pictures,
tables not in their own scroll box; below ~500 px, where headless Chromium's window stops shrinking, the
page is shown in an iframe of that width), then prints JSON: {width: [overflowing elements]} and exits 1 when
any is listed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

PROBE = """<script>
window.addEventListener('load', () => {
  const w = document.documentElement.clientWidth, out = [];
  for (const el of document.body.querySelectorAll('*')) {
    let p = el.parentElement, scrolled = false;
    for (; p && p !== document.body; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (s.overflowX === 'auto' || s.overflowX === 'scroll') { scrolled = true; break; }
    }
    const r = el.getBoundingClientRect();
    if (!scrolled && r.width > 0 && r.right > w + 1) out.push(`${el.tagName.toLowerCase()}${el.className ? '.' +
      el.className : ''} right ${Math.round(r.right)} > ${w}: ${(el.textContent || el.getAttribute('src') ||
      '').slice(0, 60).replace(/\\s+/g, ' ')}`);
  }
  const doc = window.parent === window ? document : window.parent.document;
  const pre = doc.createElement('pre'); pre.id = 'overflow-probe';
  pre.textContent = JSON.stringify(out); doc.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("report_screenshots: no Chromium on PATH (apt-get install chromium)")


WINDOW_MIN = 600  # headless Chromium keeps its window at least ~500 px wide: narrower pages go in an iframe


def run(browser: str, page: str, width: int, *flags: str) -> subprocess.CompletedProcess:
    if width < WINDOW_MIN:
        frame = page[: -len(".html")] + f"-frame-{width}.html"
        with open(frame, "w", encoding="utf-8") as f:
            f.write(f"<!doctype html><html><body style='margin:0'><iframe src='file://{page}' "
                    f"style='width:{width}px;height:2400px;border:0'></iframe></body></html>")
        page, window = frame, WINDOW_MIN
    else:
        window = width
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--allow-file-access-from-files", f"--window-size={window},2400",
                           "--virtual-time-budget=5000", *flags, f"file://{page}"],
                          capture_output=True, text=True, timeout=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page")
    ap.add_argument("--output", default=".")
    ap.add_argument("--widths", default="1400,420")
    args = ap.parse_args(argv)
    browser, page = chromium(), os.path.abspath(args.page)
    os.makedirs(args.output, exist_ok=True)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        probed = os.path.join(tmp, "probed.html")
        page_copy = os.path.join(tmp, "page.html")
        shutil.copyfile(page, page_copy)
        with open(page, encoding="utf-8") as f:
            html = f.read()
        with open(probed, "w", encoding="utf-8") as f:
            f.write(html.replace("</body>", PROBE + "</body>"))
        for width in (int(w) for w in args.widths.split(",")):
            shot = os.path.abspath(os.path.join(args.output, f"report-{width}.png"))
            run(browser, page_copy, width, f"--screenshot={shot}")
            dom = run(browser, probed, width, "--dump-dom").stdout
            m = re.search(r'<pre id="overflow-probe">(.*?)</pre>', dom, re.S)
            found[width] = json.loads(m.group(1).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
                                      ) if m else ["probe did not run"]
    json.dump(found, sys.stdout, indent=2)
    print()
    sys.exit(1 if any(found.values()) else 0)


if __name__ == "__main__":
    main()
