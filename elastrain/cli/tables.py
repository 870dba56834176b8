"""Tables for a person at a terminal, tab-separated lines for a program reading a pipe."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def print_table(console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                keep: Sequence[int] = (), title: str | None = None) -> None:
    """Print `rows` under `headers`.

    At a terminal: a Rich table whose `keep` columns (ids, paths: what a user copies into the
    next command) are never wrapped or cut, while the others wrap, headers included, to fit the
    console's width (readable at 80 columns). Otherwise: the headers, then each row, as
    tab-separated lines (the title is left out).
    """
    if not console.is_terminal:
        for line in (headers, *rows):   # written as is: Rich would expand the tabs
            console.file.write("\t".join(line) + "\n")
        return
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for index, header in enumerate(headers):
        if index in keep:
            widest = max((len(row[index]) for row in rows), default=0)
            table.add_column(header, no_wrap=True, min_width=max(widest, len(header)))
        else:
            table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
