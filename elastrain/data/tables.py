"""Reading a CSV or Parquet table: the one reader `validate`, `run` and `predict` share.

What it promises, whatever the file: compression is recognised by the file's first bytes (gzip,
bz2, xz, zip, zstd; a tar archive by its suffix) and used for sniffing and reading alike; the
separator and decimal mark are the spec's or detected once from the first lines; a separator at
the end of data rows does not shift the columns; a header that names a column twice is refused;
the row index pandas' `to_csv()` writes, and empty unnamed columns, are dropped with a warning,
never trained on; numbers written with thousands separators (`1,483.62`) are read as numbers;
Parquet columns of lists, maps or structs are refused by name.
"""

from __future__ import annotations

import csv
import itertools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pandas.io.common import get_handle, infer_compression

from elastrain.errors import UserError
from elastrain.spec import CsvSpec

SEPARATORS = (",", ";", "\t", "|")   # the separators detected, in order of preference
SNIFF_LINES = 20
# pandas' default missing-value spellings; the target column does not use them (a class may be "NA").
NA_SPELLINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip",
         b"\x28\xb5\x2f\xfd": "zstd"}
PARQUET_MAGIC = b"PAR1"
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:[. '\u00a0\u202f]\d{3})+|\d+),\d+")   # 1,5 and 1.483,62
_DECIMAL_POINT = re.compile(r"[+-]?(?:\d{1,3}(?:[, '_\u00a0\u202f]\d{3})+|\d*)\.\d+")   # 1.5 and 1,483.62
_UNNAMED = re.compile(r"\s*|Unnamed: \d+|__index_level_\d+__")   # pandas' names for a blank header, and its index
# Thousands grouped by one mark, per decimal mark: 1,483.62 / 1 483,62 / 1'483.62.
_GROUPS = {".": (",", "'", " ", "\u00a0", "\u202f", "_"), ",": (".", "'", " ", "\u00a0", "\u202f")}
_DIGITS_AND_MARKS = r"[+-]?[\d.,' _\u00a0\u202f]+"


@dataclass
class Table:
    """A table as read: its columns, how a CSV was read (for error messages: " (read with separator
    ';', decimal ',')", "" for Parquet), and warnings for the user about what was left out."""

    frame: pd.DataFrame
    how: str = ""
    warnings: list[str] = field(default_factory=list)


def table_format(path: Path) -> str:
    """"parquet" for a file with a Parquet suffix (.parquet, .pq) or Parquet's magic bytes, else "csv"
    (for files of new samples, which have no source prefix to say)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    return "parquet" if _first_bytes(path, len(PARQUET_MAGIC)) == PARQUET_MAGIC else "csv"


def read_table(path: Path, options: CsvSpec, fmt: str, target: str | None = None) -> Table:
    """A CSV or Parquet file as a DataFrame.

    Args:
        path: the file.
        options: data.csv: separator and decimal mark (None: detected).
        fmt: "csv" or "parquet" (the source's prefix decides, not the file's suffix).
        target: the target column, if the file has one: a CSV's target is read as text exactly as
            written (`01` stays `01`, `NA` is a value); only a blank cell is missing.

    Raises:
        UserError: the file is empty, malformed, names a column twice, has a column without a
            name that holds values, or (Parquet) a column of lists, maps or structs.
    """
    if fmt == "parquet":
        return _read_parquet(path, target)
    compression = _compression(path)
    how = ""
    try:
        sep, decimal = csv_format(_sniff_lines(path, compression), options)
        how = f" (read with separator {sep!r}, decimal {decimal!r})"
        header = _header(path, sep, compression)
        _refuse_duplicates(header, path, how)
        frame = _read_csv(path, sep, decimal, compression, header, target)
    except pd.errors.EmptyDataError:
        raise UserError("the file is empty", where=str(path), fix="give a file with a header row and data") from None
    except _LongRow:
        raise _long_row(path, sep, compression, len(header), how) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, ImportError, EOFError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read the file{how}: {detail}", where=str(path),
                        fix="check that it is a valid CSV (with a header row; data.csv sets separator and decimal "
                            "mark), compressed or not, or a Parquet file (source parquet:...)") from None
    table = Table(frame, how)
    _drop_unnamed(table, header, path)
    _read_grouped_numbers(table.frame, decimal, skip=target)
    return table


def csv_format(lines: list[str], options: CsvSpec) -> tuple[str, str]:
    """The separator and decimal mark to read a CSV file with: those `options` give, else detected
    from its first `lines`.

    The separator detected is the first of , ; tab | with the most fields that splits the header and
    every one of the next lines into the same number (at least two) of fields, not counting an empty
    field after a separator at the end of a line, else ','. The decimal mark detected is ',' when
    the separator is not ',' and values like 1,5 (or 1.483,62) appear but none like 1.5 (or 1,483.62).
    """
    sep = options.sep or _detect_separator(lines)
    if options.decimal:
        return sep, options.decimal
    fields = [value.strip() for row in csv.reader(lines, delimiter=sep) for value in row]
    commas = sep != "," and any(_DECIMAL_COMMA.fullmatch(v) for v in fields)
    return sep, "," if commas and not any(_DECIMAL_POINT.fullmatch(v) for v in fields) else "."


def _detect_separator(lines: list[str]) -> str:
    best, best_width = ",", 1
    for sep in SEPARATORS:
        widths = {len(row) - (len(row) > 1 and row[-1] == "") for row in csv.reader(lines, delimiter=sep) if row}
        if len(widths) == 1 and (width := widths.pop()) > best_width:
            best, best_width = sep, width
    return best


def _first_bytes(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(n)
    except OSError:
        return b""   # the reader reports why the file cannot be opened


def _compression(path: Path) -> str | None:
    """The compression the file's first bytes name (a tar archive: its suffix), or None: one answer
    for sniffing and reading."""
    if infer_compression(str(path), "infer") == "tar":
        return "tar"
    start = _first_bytes(path, 6)
    return next((kind for magic, kind in MAGIC.items() if start.startswith(magic)), None)


def _sniff_lines(path: Path, compression: str | None) -> list[str]:
    """The file's first lines, decompressed, as the separator and decimal mark are detected from."""
    with get_handle(path, "r", encoding="utf-8", errors="replace", compression=compression) as handles:
        lines = list(itertools.islice(handles.handle, SNIFF_LINES + 1))
    if len(lines) > SNIFF_LINES:   # the last line read may be cut inside a quoted value
        lines.pop()
    return lines


def _header(path: Path, sep: str, compression: str | None) -> list[str]:
    """The header row's names as written (pandas renames blank and repeated ones when it reads)."""
    first = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False,
                        compression=compression, index_col=False)
    return [str(name) for name in first.iloc[0].tolist()]


class _LongRow(Exception):
    """A data row has a value beyond the header's columns."""


def _read_csv(path: Path, sep: str, decimal: str, compression: str | None, header: list[str],
              target: str | None) -> pd.DataFrame:
    """The whole file. An empty field after a separator at the end of a row is not a value
    (`index_col=False`); a row with a value beyond the header's columns raises _LongRow."""
    position = header.index(target) if target in header else None
    options: dict = {}
    if position is not None:
        options = {"keep_default_na": False, "dtype": {position: str},
                   "na_values": {i: NA_SPELLINGS for i in range(len(header)) if i != position}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(path, sep=sep, decimal=decimal, compression=compression, index_col=False,
                                **options)
        except pd.errors.ParserError as exc:
            if "Expected" in str(exc) and _first_long_row(path, sep, compression, len(header)) is not None:
                raise _LongRow from exc
            raise
    # pandas warns of any field past the header, empty or not, and drops it: only values matter.
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught) and \
            _first_long_row(path, sep, compression, len(header)) is not None:
        raise _LongRow
    return frame


def _refuse_duplicates(names: list[str], path: Path, how: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name.strip() and name in seen:
            raise UserError(f"the header names column '{name}' twice (columns {seen[name]} and {position}){how}",
                            where=str(path), fix="give each column its own name, or remove the copy")
        seen.setdefault(name, position)


def _first_long_row(path: Path, sep: str, compression: str | None, width: int) -> tuple[int, int] | None:
    """The line number and width of the first row with a value beyond the header's `width` columns."""
    with get_handle(path, "r", encoding="utf-8", errors="replace", compression=compression) as handles:
        for line, row in enumerate(csv.reader(handles.handle, delimiter=sep), start=1):
            if len(row) > width and any(value.strip() for value in row[width:]):
                return line, len(row)
    return None


def _long_row(path: Path, sep: str, compression: str | None, width: int, how: str) -> UserError:
    """The error for a data row with more values than the header has names, naming its line."""
    line, values = _first_long_row(path, sep, compression, width) or (0, 0)
    named = f"{width} column{'s' if width != 1 else ''}"
    fix = "remove the extra values, or name their column in the header"
    if width == 1:   # the header did not split: most likely another separator
        fix = "set data.csv.sep to the file's separator; the header was read as one column"
    return UserError(f"line {line} has {values} values, the header names {named}{how}", where=str(path), fix=fix)


def _drop_unnamed(table: Table, header: list[str], path: Path) -> None:
    """Drop the columns without a name that carry nothing to learn: a first column of distinct values
    or of integers (the row index `to_csv()` writes; concatenated frames repeat theirs) and empty
    columns (a separator at the end of each line).

    Raises:
        UserError: another column without a name holds values.
    """
    frame = table.frame
    for position, (column, written) in enumerate(zip(list(frame.columns), header, strict=False)):
        if not _UNNAMED.fullmatch(written):
            continue
        values = frame[column]
        if values.isna().all():
            table.warnings.append(f"{path}: column {position + 1} has no name and no values (a separator at the "
                                  "end of each line?); it is ignored")
        elif position == 0 and values.notna().all() and (values.is_unique or pd.api.types.is_integer_dtype(values)):
            table.warnings.append(f"{path}: column 1 ('{written}') has no name and holds row labels: the row index "
                                  "that pandas' to_csv() writes; it is not trained on (write the file with "
                                  "index=False, or name the column to train on it)")
        else:
            raise UserError(f"column {position + 1} has no name but holds values", where=str(path),
                            fix="name it in the header row, or remove it")
        frame = frame.drop(columns=column)
    table.frame = frame


def _read_grouped_numbers(frame: pd.DataFrame, decimal: str, skip: str | None) -> None:
    """Turn text columns of numbers written with a thousands mark (1,483.62) into numbers, in place."""
    for column in frame.columns:
        series = frame[column]
        if column == skip or pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        present = series.dropna()
        if len(present) == 0 or not all(isinstance(v, str) for v in present):
            continue
        texts = present.str.strip()
        if not texts.str.fullmatch(_DIGITS_AND_MARKS).all():   # text, not numbers: one pass decides
            continue
        for mark in _GROUPS[decimal]:
            pattern = _grouped_number(mark, decimal)
            matched = texts.str.fullmatch(pattern)
            if matched.all() and texts.str.contains(mark, regex=False).any():
                plain = series.str.strip().str.replace(mark, "", regex=False).str.replace(decimal, ".", regex=False)
                frame[column] = pd.to_numeric(plain)
                break


def _grouped_number(mark: str, decimal: str) -> str:
    """A number with thousands grouped by `mark` (or none), with `decimal` as its decimal mark."""
    m, d = re.escape(mark), re.escape(decimal)
    return rf"[+-]?(?:\d{{1,3}}(?:{m}\d{{3}})+|\d+)(?:{d}\d+)?"


def _read_parquet(path: Path, target: str | None) -> Table:
    import pyarrow
    import pyarrow.parquet

    try:
        schema = pyarrow.parquet.read_schema(path)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise UserError(f"cannot read the Parquet file: {str(exc).strip().splitlines()[0]}", where=str(path),
                        fix="give a valid Parquet file, or a CSV file with source csv:...") from None
    _refuse_duplicates(list(schema.names), path, "")
    nested = [f"{f.name} ({f.type})" for f in schema if pyarrow.types.is_nested(f.type)]
    if nested:
        raise UserError(f"column(s) {', '.join(nested)} hold lists, maps or structs, which are not supported as "
                        "features or target", where=str(path),
                        fix="drop these columns, or flatten them into one column per value")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise UserError(f"cannot read the Parquet file: {str(exc).strip().splitlines()[0]}", where=str(path),
                        fix="give a valid Parquet file") from None
    table = Table(frame)
    _drop_unnamed(table, [str(c) for c in frame.columns], path)
    _read_grouped_numbers(table.frame, ".", skip=target)
    return table
