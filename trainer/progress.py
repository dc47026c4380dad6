"""Rich progress bars with loss and AUC fields (only the main process draws)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """A progress display; ``enabled=False`` gives a silent one (other ranks, --quiet)."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def task(self, description: str, total: int) -> int | None:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, stats="")

    def advance(self, task: int | None, steps: int = 1, **stats: float | str | None) -> None:
        if self._progress is None or task is None:
            return
        if not stats:  # keep the figures shown last
            self._progress.update(task, advance=steps)
            return
        text = "  ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in stats.items()
            if v is not None
        )
        self._progress.update(task, advance=steps, stats=text)

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)
