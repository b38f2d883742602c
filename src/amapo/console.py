"""Tables in the terminal, printed whole; progress bars with a rate and an ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def print_table(table: Table, console: Console) -> None:
    """Print ``table`` whole. Piped into a file or a pager, a console is 80 columns wide and rich would cut the
    headers ("reward_…"); there, the console is widened to the table for this print."""
    if console.is_terminal:
        console.print(table)
        return
    needed = console.measure(table, options=console.options.update_width(100_000)).maximum
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(table)
    finally:
        console.width = width


class RateColumn(ProgressColumn):
    """Items done per second (rich's speed estimate over recent updates)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"- {self.unit}/s" if task.speed is None else f"{task.speed:.2f} {self.unit}/s")


def progress_bar(console: Console, unit: str, disable: bool = False) -> Progress:
    """A bar that shows done / total, the rate in ``unit`` per second, the time so far and the time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )
