"""What the command-line tools show while they work: a tqdm bar per phase where stdout is a terminal,
plain lines otherwise (a log file, a pipe). Phases (the SFT warm start, SEPO, an evaluation) are named
and timed on their own, from when their programs are compiled, so an ETA is the remaining units at the
rate measured in that phase, never counting a compile."""

from __future__ import annotations

import os
import sys
import time


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fields(metrics: dict, keys) -> str:
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def _width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return 0


class Progress:
    """`say(line)` prints a message; `start(name, done, total, unit)` begins a phase (its clock starts
    then) whose units `done + 1 .. total` remain; `advance(done, text)` says that units up to `done` are
    finished, with `text` (metrics) shown on the bar (also printed above it with `keep`) or, without a
    terminal, printed as a line with the rate and ETA when given."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.bar = None
        self.name, self.unit, self.first, self.total, self.t0 = "", "step", 0, 0, 0.0

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def start(self, name: str, done: int, total: int, unit: str = "step") -> None:
        self.end()
        self.name, self.unit, self.first, self.total, self.t0 = name, unit, done, total, time.perf_counter()
        if self.tty:
            from tqdm import tqdm

            sized = _width() > 0  # a pseudo-terminal may report 0 columns, where tqdm draws nothing
            self.bar = tqdm(total=total, initial=done, desc=name, unit=unit, file=sys.stdout, dynamic_ncols=sized,
                            ncols=None if sized else 100, nrows=None if sized else 40)

    def rate(self, done: int) -> float | None:
        """Seconds per unit so far in this phase, None before its first unit is done."""
        return (time.perf_counter() - self.t0) / (done - self.first) if done > self.first else None

    def advance(self, done: int, text: str = "", keep: bool = False) -> None:
        if self.bar is not None:
            if text and keep:
                self.bar.write(text, file=sys.stdout)
            elif text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        if not text:
            return
        rate = self.rate(done)
        timing = f" | {rate:.3g} s/{self.unit}, eta {duration(rate * (self.total - done))}" if rate else ""
        print(f"[{self.name}] {self.unit} {done}/{self.total} {text}{timing}", flush=True)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
