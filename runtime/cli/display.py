"""Terminal output of ``sluice run``: a live progress display and the summary table (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime.pipes import RunResult

COUNTS = ("read", "new", "changed", "deleted", "unchanged")


class RunProgress:
    """One progress line per pipe: entities read and versions written so far (nothing when not
    ``enabled``: with JSON logs, stderr holds JSON lines only)."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.fields[pipe]}"),
            TextColumn("read {task.fields[read]:>9,}  written {task.fields[written]:>9,}"),
            TimeElapsedColumn(), console=console, transient=True, disable=not enabled,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, result: RunResult) -> None:
        task = self.tasks.get(result.run_id)
        if task is None:
            task = self.progress.add_task("", total=None, pipe=result.pipe, read=0, written=0)
            self.tasks[result.run_id] = task
        self.progress.update(task, read=result.read, written=result.changes)


def summary_table(results: list[RunResult]) -> Table:
    """Per run: pipe, status, full or incremental, counts and seconds."""
    table = Table(title="sluice run", title_justify="left")
    table.add_column("pipe")
    table.add_column("status")
    table.add_column("run")
    for name in COUNTS:
        table.add_column(name, justify="right")
    table.add_column("seconds", justify="right")
    styles = {"completed": "green", "stopped": "yellow", "failed": "red"}
    for r in results:
        table.add_row(
            r.pipe, f"[{styles.get(r.status, 'white')}]{r.status}[/]", r.kind,
            *[f"{getattr(r, n):,}" for n in COUNTS], f"{r.seconds:.2f}",
        )
    return table


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A plain table of strings."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
