"""Training progress on stderr: a rich bar on a terminal, a plain log line every few steps otherwise
(so a background run's log file shows loss, tokens/s and ETA too)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, stage: str, total: int, start: int = 0, quiet: bool = False, log_every: int = 10):
        self.stage, self.total, self.start, self.quiet, self.log_every = stage, total, start, quiet, log_every
        self.console = Console(stderr=True)
        self.live = not quiet and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._bar: Progress | None = None

    def __enter__(self) -> TrainProgress:
        if self.live:
            self._bar = Progress(
                TextColumn(f"[bold]{self.stage}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, record: dict[str, Any], tokens_per_s: float) -> None:
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in record.items() if k != "step")
        info += f" tok/s={tokens_per_s:,.0f}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif not self.quiet and (step % self.log_every == 0 or step == self.total or "eval_loss" in record):
            done = step - self.start
            eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - step)
            self.console.print(f"{self.stage} step {step}/{self.total} {info} eta={eta / 60:.1f}min",
                               highlight=False, soft_wrap=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
