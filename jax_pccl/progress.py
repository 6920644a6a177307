"""A one-line progress bar for long work (the demo, benchmarks, examples).

It draws on a terminal only: when the stream is a file or a pipe (CI logs,
``| tee``) it writes nothing, so logs keep only the lines that matter. Lines
printed through ``Progress.print`` appear above the bar either way.
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    """``with Progress(total, "training") as bar: bar.update(done)``."""

    WIDTH = 30

    def __init__(self, total: int, label: str, stream=None, min_interval_s: float = 0.1):
        self.total = max(1, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.note = ""
        self._min_interval_s = min_interval_s
        self._drawn_at = 0.0
        self._lock = threading.Lock()  # updates may come from several reader threads
        self._start = time.monotonic()

    def update(self, done: int, note: str = "") -> None:
        with self._lock:
            self.done = min(max(self.done, int(done)), self.total)
            self.note = note or self.note
            now = time.monotonic()
            if self.done < self.total and now - self._drawn_at < self._min_interval_s:
                return
            self._drawn_at = now
            self._draw()

    def print(self, line: str, stream=None) -> None:
        """A line above the bar (the bar is redrawn under it)."""
        out = stream if stream is not None else sys.stdout
        with self._lock:
            if self.enabled:
                self.stream.write("\r\033[K")
                self.stream.flush()
            out.write(line + "\n")
            out.flush()
            if self.enabled and self.done:
                self._draw()

    def close(self) -> None:
        with self._lock:
            if self.enabled and self.done:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _draw(self) -> None:
        if not self.enabled:
            return
        filled = self.WIDTH * self.done // self.total
        elapsed = time.monotonic() - self._start
        rate = f" {self.done / elapsed:.1f}/s" if elapsed > 0 and self.done else ""
        note = f"  {self.note}" if self.note else ""
        self.stream.write(f"\r\033[K{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{self.done}/{self.total}{rate}{note}")
        self.stream.flush()
