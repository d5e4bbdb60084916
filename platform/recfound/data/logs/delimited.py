"""Delimited text files (MovieLens' CSV, tab- and '|'-separated files): read whole by pyarrow and checked
in bulk; only when something is wrong is the file read again line by line, to name the first bad line
and field (`file:line: field: message`)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from recfound.data.logs.textio import Notes, raw_lines
from recfound.data.reader import RecordError

_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
_SEPARATORS = {"\t": "tabs", ",": "commas", "|": "'|'"}
BLOCK_BYTES = 1 << 24  # pyarrow's read block; rows never straddle one in these files


@dataclass(frozen=True)
class Column:
    """One column we read: its name, its kind (int, float, str) and, for numbers, inclusive bounds."""

    name: str
    kind: str = "str"
    low: float | None = None
    high: float | None = None

    def problem(self, text: str) -> str | None:
        """What is wrong with one field's text, or None."""
        if self.kind == "str":
            return None
        try:
            value = int(text) if self.kind == "int" else float(text)
        except ValueError:
            return f"expected {'an integer' if self.kind == 'int' else 'a number'}, got {text!r}"
        if math.isnan(value) or (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            return f"{text} is outside the range {self.low:g} to {self.high:g}"
        return None

    def bad_rows(self, values: pa.ChunkedArray) -> bool:
        """True when any value is missing or out of bounds (the slow pass then names the first)."""
        if self.kind == "str":
            return False
        if values.null_count:
            return True
        array = values.to_numpy()
        bad = np.isnan(array) if self.kind == "float" else np.zeros(len(array), dtype=bool)
        if self.low is not None:
            bad |= array < self.low
        if self.high is not None:
            bad |= array > self.high
        return bool(bad.any())


@dataclass(frozen=True)
class FileLayout:
    """A delimited file's shape: the columns we read (in file order when there is no header)."""

    label: str
    delimiter: str
    columns: tuple[Column, ...]
    header: bool = False
    quoted: bool = False
    encoding: str = "utf-8"
    encoding_hint: str = ""  # appended when the file does not decode

    @property
    def separator_name(self) -> str:
        return _SEPARATORS.get(self.delimiter, repr(self.delimiter))


def read_delimited(path: Path, layout: FileLayout, notes: Notes, encoding: str | None = None) -> pa.Table:
    """The file's columns named in `layout`, typed; a RecordError names the first bad line and field."""
    encoding = encoding or layout.encoding
    names = _column_names(path, layout, notes, encoding)
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=int(layout.header), encoding=encoding,
                                          block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter=layout.delimiter, quote_char='"' if layout.quoted else False),
            convert_options=pcsv.ConvertOptions(
                column_types={c.name: _TYPES[c.kind] for c in layout.columns},
                include_columns=[c.name for c in layout.columns],
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        _locate(path, layout, names, encoding, err)
    if any(column.bad_rows(table[column.name]) for column in layout.columns):
        _locate(path, layout, names, encoding, "a value failed the bulk check")
    return table


def _column_names(path: Path, layout: FileLayout, notes: Notes, encoding: str) -> list[str]:
    """Every column of the file, by name: from the header, or the layout's names (plus `extra_N`)."""
    expected = [c.name for c in layout.columns]
    first = next(((n, raw) for n, raw in raw_lines(path) if raw.strip()), None)
    if first is None:
        raise RecordError(path, None, "<file>", f"empty file; expected {layout.label}")
    number, raw = first
    if layout.header:
        text = _decode(path, layout, number, raw, encoding, ["<header>"]).removeprefix("\ufeff")  # Excel's BOM
        names = next(csv.reader([text], delimiter=layout.delimiter))
        missing = [name for name in expected if name not in names]
        if missing:
            raise RecordError(path, number, missing[0], f"no such column in the header ({', '.join(names)}); "
                              f"{layout.label} needs {', '.join(expected)}")
        unknown = [name for name in names if name not in expected]
        if unknown:
            notes.warn(f"{path.name}: ignoring unknown column(s) {', '.join(unknown)}")
        return names
    count = raw.count(layout.delimiter.encode()) + 1
    if count < len(expected):
        raise RecordError(path, number, expected[count], f"missing field: {layout.label} has {len(expected)} "
                          f"fields separated by {layout.separator_name}, this line {count}")
    if count > len(expected):
        notes.warn(f"{path.name}: {count} fields per line where {layout.label} has {len(expected)}; "
                   "ignoring the extra ones")
    return expected + [f"extra_{i}" for i in range(len(expected) + 1, count + 1)]


def _decode(path: Path, layout: FileLayout, number: int, raw: bytes, encoding: str, names: list[str]) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        index = raw[: err.start].count(layout.delimiter.encode())
        name = names[index] if index < len(names) else "<line>"
        hint = f"; {layout.encoding_hint}" if layout.encoding_hint else ""
        raise RecordError(path, number, name, f"not valid {encoding} (byte 0x{raw[err.start]:02x} at column "
                          f"{err.start + 1}){hint}") from None


def _locate(path: Path, layout: FileLayout, names: list[str], encoding: str, cause: object) -> NoReturn:
    """Raise the RecordError of the first bad line (the slow pass after a bulk read failed)."""
    wanted = [(names.index(c.name), c) for c in layout.columns]
    lines = raw_lines(path)
    if layout.header:
        next(lines)
    for number, raw in lines:
        if not raw:  # the bulk reader skips empty lines, not lines of blanks
            continue
        if not raw.strip():
            raise RecordError(path, number, "<line>", "a line of only spaces or tabs: delete it")
        text = _decode(path, layout, number, raw, encoding, names)
        fields = next(csv.reader([text], delimiter=layout.delimiter)) if layout.quoted else text.split(layout.delimiter)
        if len(fields) != len(names):
            name = names[len(fields)] if len(fields) < len(names) else "<line>"
            raise RecordError(path, number, name, f"{len(fields)} fields separated by {layout.separator_name} "
                              f"where the file has {len(names)}")
        for index, column in wanted:
            problem = column.problem(fields[index])
            if problem:
                raise RecordError(path, number, column.name, problem)
    raise RecordError(path, None, "<file>", f"unreadable as {layout.label}: {cause}")

