"""Progress lines for long stages: done of total, rate and time left, at most every few seconds.

One wording everywhere (prep's passes, embed, training), e.g.
``1,312 of 3,000 clips (65.6/s, ~26 s left)``; without a known total, ``1,312 clips (65.6/s)``.
"""

from __future__ import annotations

import time


def duration_text(seconds: float) -> str:
    """``42 s``, ``6.5 min``, ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress_text(done: float, total: float | None, elapsed_s: float, unit: str, fmt: str = "{:,.0f}") -> str:
    """``done of total unit (rate/s, ~time left)``; the rate is done / elapsed, the time left assumes it holds."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    rate_text = f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"
    if total is None:
        return f"{fmt.format(done)} {unit} ({rate_text})"
    left = f", ~{duration_text(max(0.0, total - done) / rate)} left" if rate > 0 and done < total else ""
    return f"{fmt.format(done)} of {fmt.format(total)} {unit} ({rate_text}{left})"


class Meter:
    """Counts toward a total and says when a line is due (every ``every_s`` seconds)."""

    def __init__(self, total: float | None = None, every_s: float = 30.0):
        self.total = total
        self.every_s = every_s
        self.done = 0.0
        self.start = self._last = time.monotonic()

    def add(self, n: float = 1) -> bool:
        """Count ``n``; True when a progress line is due."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            return True
        return False

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.start

    def text(self, unit: str, fmt: str = "{:,.0f}") -> str:
        return progress_text(self.done, self.total, self.elapsed_s, unit, fmt)
