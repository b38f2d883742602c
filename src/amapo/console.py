"""Tables in the terminal, printed whole."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


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
