"""Progress on long work that a person at a terminal and a log file can both follow.

On a terminal: a tqdm bar. Anywhere else (CI logs, `nohup`, a pipe) tqdm either redraws into the log or shows
nothing, so `PlainProgress` prints one plain line instead: at the first update that allows an ETA, then every
`SLIMTUNE_PROGRESS_SECONDS` (default 30) and at the end:

    train: 120/1,580 batch (7.6%), 3.1 batch/s, elapsed 0:38, ETA 7:50, loss=0.4125 ex_s=99

    >>> with progress_bar(3, "demo") as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
"""

import os
import sys
import time

from tqdm import tqdm


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """The part of tqdm's interface slimtune uses, printing periodic plain lines."""

    def __init__(self, total: int, desc: str, unit: str = "batch", initial: int = 0, file=None,
                 every_seconds: float | None = None):
        self.total, self.desc, self.unit, self.n, self.file = total, desc, unit, initial, file or sys.stderr
        self.every = every_seconds if every_seconds is not None else float(
            os.environ.get("SLIMTUNE_PROGRESS_SECONDS", "30"))
        self.start_n, self.started = initial, time.monotonic()
        self.last_print: float | None = None
        self.postfix: dict = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        first_estimate = self.last_print is None and now - self.started >= min(self.every, 5.0)
        if first_estimate or (self.last_print is not None and now - self.last_print >= self.every):
            self._print(now)

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.n > self.start_n:
            self._print(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _print(self, now: float) -> None:
        self.last_print = now
        elapsed = now - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        line = f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}"
        if self.total:
            line += f" ({100 * self.n / self.total:.1f}%)"
        line += f", {rate:.3g} {self.unit}/s, elapsed {_clock(elapsed)}"
        if rate > 0 and self.total and self.n < self.total:
            line += f", ETA {_clock((self.total - self.n) / rate)}"
        if self.postfix:
            line += ", " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(line, file=self.file, flush=True)


def progress_bar(total: int, desc: str, unit: str = "batch", initial: int = 0, disable: bool = False):
    """A tqdm bar on a terminal, `PlainProgress` lines elsewhere, nothing when `disable`."""
    if disable:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    return PlainProgress(total, desc, unit, initial)


def note(message: str) -> None:
    """A line on stderr that does not break a running bar."""
    tqdm.write(message, file=sys.stderr)
