"""Running a command in its own process and reading what it cost: wall-clock and peak resident memory.

Each training runs in a fresh interpreter so its peak RSS is its own: `os.wait4` returns the resource usage of
exactly that child (`RUSAGE_CHILDREN` would keep the largest child seen so far).
"""

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildResult:
    returncode: int
    peak_rss_bytes: int
    wall_seconds: float
    last_error_line: str  # the last non-empty line the child wrote, the error message when it failed


def run_measured(command: list[str], log_path: Path, threads: int | None = None,
                 env_overrides: dict[str, str] | None = None,
                 on_wait: Callable[[float, str], None] | None = None) -> ChildResult:
    """Run `command` with stdout and stderr to `log_path`; wait for it and read its peak RSS.
    `on_wait(seconds so far, the log's last line)` is called every SLIMTUNE_PROGRESS_SECONDS (default 30) while
    the child runs, so a caller can show progress."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", **(env_overrides or {}))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            status, usage = _wait(child.pid, log_path, started, on_wait)
        except BaseException:  # interrupted: take the child down with us rather than leave it running
            child.kill()
            child.wait()
            raise
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen so it does not wait again
    wall = time.perf_counter() - started
    return ChildResult(child.returncode, usage.ru_maxrss * 1024, wall, last_line(log_path))  # Linux: KiB


def _wait(pid: int, log_path: Path, started: float, on_wait) -> tuple[int, object]:
    """The child's (wait status, rusage); polled once a second when `on_wait` wants periodic calls."""
    if on_wait is None:
        return os.wait4(pid, 0)[1:]
    every, last_call = float(os.environ.get("SLIMTUNE_PROGRESS_SECONDS", "30")), time.perf_counter()
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        time.sleep(min(1.0, every))
        if time.perf_counter() - last_call >= every:
            last_call = time.perf_counter()
            on_wait(last_call - started, last_line(log_path))


def last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""
