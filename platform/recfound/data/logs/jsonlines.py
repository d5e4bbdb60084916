"""JSON-lines input (Amazon Reviews): one object per line, plain or gzipped.

Bulk reading goes through pyarrow with an explicit schema (unknown keys are skipped); when pyarrow
fails or a batch breaks a rule, the file is read again line by line to name the first bad line and
field. A JSON array, pretty-printed or concatenated objects and Python dict literals each get a
message that says what the file is and how to turn it into JSON lines.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from recfound.data.logs.textio import raw_lines
from recfound.data.reader import RecordError

BLOCK_BYTES = 1 << 24  # pyarrow's read block: longer than any one review or item line
_ARROW = {"str": pa.string(), "number": pa.float64(), "int": pa.int64()}
_PYTHON = {"str": (str,), "number": (int, float), "int": (int,), "list": (list,), "dict": (dict,),
           "texts": (str, list)}
_NAMES = {"str": "a string", "number": "a number", "int": "an integer", "list": "a list", "dict": "an object",
          "texts": "a string or a list of strings"}
GZIP_MAGIC = b"\x1f\x8b"
ONE_PER_LINE = "write one object per line, e.g. jq -c . FILE > FILE.jsonl"


@dataclass(frozen=True)
class Field:
    """One key we read: its kind (str, number, int, list, dict), whether it must be there, number bounds."""

    name: str
    kind: str
    required: bool = False
    low: float | None = None
    high: float | None = None

    def problem(self, obj: dict) -> str | None:
        value = obj.get(self.name)
        if value is None:
            return "missing field" if self.required else None
        if isinstance(value, bool) or not isinstance(value, _PYTHON[self.kind]):
            return f"expected {_NAMES[self.kind]}, got {type(value).__name__} {json.dumps(value)[:40]}"
        if isinstance(value, float) and not math.isfinite(value):  # json reads NaN and Infinity
            return f"{value} is not a finite number"
        if self.low is not None and not self.low <= value <= self.high:
            return f"{value} is outside the range {self.low:g} to {self.high:g}"
        return None

    def bad_rows(self, column: pa.Array) -> bool:
        if self.required and column.null_count:
            return True
        if pa.types.is_floating(column.type) and pc.any(pc.invert(pc.is_finite(column))).as_py():
            return True
        if self.low is None:
            return False
        values = column.to_numpy(zero_copy_only=False)
        return bool(np.any((values < self.low) | (values > self.high)))


def parse_line(path: Path, number: int, raw: bytes) -> dict:
    """One line's object, or the RecordError that says what the line (and so the file) is instead."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if number == 1 and raw.startswith(GZIP_MAGIC):
            raise RecordError(path, None, "<file>", f"gzip-compressed data in a file not named .gz: rename it "
                              f"{path.name}.gz") from None
        raise RecordError(path, number, "<line>", f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                          f"{err.start + 1}); JSON files are UTF-8") from None
    stripped = text.strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if stripped.startswith("{'"):
            reason = "a Python dict literal, not JSON (as in the older Amazon dumps): convert each line with " \
                     "ast.literal_eval and json.dumps"
        elif stripped == "{":
            reason = f"an object spread over several lines (pretty-printed JSON); {ONE_PER_LINE}"
        elif err.msg == "Extra data":
            reason = f"more than one JSON object on this line (concatenated objects); {ONE_PER_LINE}"
        else:
            reason = f"invalid JSON: {err.msg} (column {err.colno})"
        raise RecordError(path, number, "<line>", reason) from None
    if not isinstance(obj, dict):
        raise RecordError(path, number, "<record>", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; the first bad line raises a RecordError."""
    checked_start = False
    for number, raw in raw_lines(path):
        if not raw.strip():
            continue
        if not checked_start:
            _check_start(path, raw)
            checked_start = True
        yield number, parse_line(path, number, raw)
    if not checked_start:
        raise RecordError(path, None, "<file>", "empty file; expected one JSON object per line")


def _check_start(path: Path, raw: bytes) -> None:
    if raw.lstrip().startswith(b"["):
        raise RecordError(path, None, "<file>", "one JSON array, not JSON lines (one object per line); convert it "
                          "with: jq -c '.[]' FILE > FILE.jsonl")


def first_objects(path: Path, count: int) -> list[tuple[int, dict]]:
    """(line number, object) of the first `count` objects (a sample for telling layouts apart and spotting
    unknown keys)."""
    return list(islice(objects(path), count))


def check(path: Path, number: int, obj: dict, fields: tuple[Field, ...]) -> None:
    """Raise the RecordError for the first field of `obj` that breaks its rule."""
    for spec in fields:
        problem = spec.problem(obj)
        if problem:
            raise RecordError(path, number, spec.name, problem)


def arrow_batches(path: Path, fields: tuple[Field, ...]) -> Iterator[pa.RecordBatch]:
    """The file's scalar `fields` as Arrow batches, in file order; other keys are skipped."""
    schema = pa.schema([(f.name, _ARROW[f.kind]) for f in fields])
    try:
        reader = pj.open_json(path, read_options=pj.ReadOptions(block_size=BLOCK_BYTES),
                              parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
        for batch in reader:
            if any(spec.bad_rows(batch.column(spec.name)) for spec in fields):
                _locate(path, fields, "a value failed the bulk check")
            yield batch
    except (pa.ArrowInvalid, OSError) as err:  # OSError: a damaged .gz (the slow pass names it)
        _locate(path, fields, err)


def _locate(path: Path, fields: tuple[Field, ...], cause: object) -> NoReturn:
    for number, obj in objects(path):
        check(path, number, obj, fields)
    raise RecordError(path, None, "<file>", f"unreadable as JSON lines: {cause}")

