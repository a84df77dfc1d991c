"""Plain aligned text tables for the management commands' output (not a command: the name starts with _)."""

from __future__ import annotations

from collections.abc import Sequence

DIGITS = frozenset("0123456789.")


def _is_number(cell: str) -> bool:
    return bool(cell) and set(cell) <= DIGITS


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "") -> str:
    """Columns padded to their widest cell; columns of numbers align right, the rest left."""
    columns = list(zip(headers, *rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [bool(rows) and all(_is_number(cell) or cell == "-" for cell in column[1:]) for column in columns]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return (indent + "  ".join(padded)).rstrip()

    return "\n".join([line(headers), *map(line, rows)])
