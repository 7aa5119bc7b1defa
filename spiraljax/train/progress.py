"""Training progress: a tqdm bar on a terminal, periodic plain lines when stderr is a file or a pipe.

A redirected tqdm bar fills the log with carriage-return frames; :class:`PlainProgress` prints one
ordinary line (``name: step 400/800 (50%), 12.3 steps/s, loss=2.913 tok/s=7,351``) at most every
``interval`` seconds, and one at the end. Both have the interface the loop uses: ``update``,
``set_postfix``, ``write`` (to stdout, like ``tqdm.write``) and ``close``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

PLAIN_INTERVAL_S = 30.0  # seconds between plain progress lines


class PlainProgress:
    """Progress as plain lines on ``file``: the first update, then at most one per ``interval`` s, and the end."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        file: TextIO | None = None,
        interval: float = PLAIN_INTERVAL_S,
        disable: bool = False,
    ):
        self.total, self.n, self.desc, self.interval, self.disable = total, initial, desc, interval, disable
        self.file = file if file is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self._start_n, self._t0 = initial, None  # the rate counts from the first step (after compiling)
        self._last: float | None = None
        self._printed_n: int | None = None

    def line(self) -> str:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        elapsed = time.monotonic() - self._t0 if self._t0 is not None else 0.0
        rate = f", {(self.n - self._start_n) / elapsed:.2f} steps/s" if elapsed > 0 and self.n > self._start_n else ""
        post = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return f"{self.desc}: step {self.n}/{self.total}{pct}{rate}" + (f", {post}" if post else "")

    def _emit(self) -> None:
        print(self.line(), file=self.file, flush=True)
        self._last, self._printed_n = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._t0 is None:
            self._t0, self._start_n = time.monotonic(), self.n
        if not self.disable and (self._last is None or time.monotonic() - self._last >= self.interval):
            self._emit()

    def set_postfix(self, postfix: dict[str, Any] | None = None, refresh: bool = False, **kwargs: Any) -> None:
        self.postfix = {**(postfix or {}), **kwargs}

    def write(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        if not self.disable and self._printed_n != self.n and self.n > self._start_n:
            self._emit()


def progress_bar(total: int, initial: int, desc: str, enabled: bool, file: TextIO | None = None):
    """A tqdm bar when ``file`` (stderr) is a terminal or in a Jupyter kernel (tqdm.auto draws a
    widget there), else :class:`PlainProgress`; silent unless ``enabled``."""
    file = file if file is not None else sys.stderr
    if (hasattr(file, "isatty") and file.isatty()) or "ipykernel" in sys.modules:
        return tqdm(
            total=total, initial=initial, disable=not enabled, dynamic_ncols=True, mininterval=1.0, desc=desc, file=file
        )
    return PlainProgress(total, initial, desc, file, disable=not enabled)
