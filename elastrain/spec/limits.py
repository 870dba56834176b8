"""Bounds on what users hand in (job specs, request bodies): how deep it nests and how big it is.

Python's parsers and serializers recurse once or more per level of nesting (`json.loads`, PyYAML's
composer, pydantic, `json.dumps` when the store writes a JSON column) and fail with RecursionError
at about a thousand frames. So depth is checked before any of them runs: on the raw text of a JSON
body (a flat scan), on the events of a YAML document as they are read (before the composer
recurses), and on the plain values a spec is made of (an explicit stack, which also catches YAML
aliases that nest or repeat a part).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from elastrain.errors import UserError

# A spec nests 3-4 levels (spec > model > options > value); 32 leaves free-form fields such as
# model.options some 28 levels of their own and stays far below the ~1,000 frames at which Python
# parsers and serializers give up, even when they are called deep inside a server's stack.
MAX_DEPTH = 32
# A spec is about 1 KB as JSON with its defaults. 64 KiB leaves room for long option lists while
# keeping each job's stored row small: GET /jobs returns up to 500 of them in one answer.
MAX_SPEC_BYTES = 64 * 1024

FLATTEN = f"flatten it: a spec needs only a few levels, and at most {MAX_DEPTH}"

# A JSON string (to the end of the text when it is not closed) or a bracket outside strings.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def check_json_depth(data: bytes, where: str) -> None:
    """Refuse JSON text that nests deeper than `MAX_DEPTH`, without parsing it.

    Args:
        data: the JSON text, in any encoding `json.loads` accepts.
        where: what the text is (a file, "request body"), for the error.

    Raises:
        UserError: a bracket opens deeper than `MAX_DEPTH`.
    """
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError:
        return   # json.loads fails on the same bytes before it parses anything
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        bracket = text[match.start()]
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(f"JSON nested deeper than {MAX_DEPTH} levels",
                                where=f"{where}:{text.count(chr(10), 0, match.start()) + 1}", fix=FLATTEN)
        elif bracket in "]}":
            depth -= 1


class BoundedYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document nesting deeper than `MAX_DEPTH` as it reads
    it, so its composer (which recurses per level) never goes deeper.

    Args:
        stream: the YAML text (str or bytes).
        source: what the text is (a file, "request body"), for the error.

    Raises (from `get_single_node` and the like):
        UserError: a mapping or sequence opens deeper than `MAX_DEPTH`.
    """

    def __init__(self, stream: str | bytes, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def get_event(self) -> yaml.Event:
        """The next parser event, after counting how deep it opens."""
        event = super().get_event()
        if isinstance(event, yaml.CollectionStartEvent):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise UserError(f"YAML nested deeper than {MAX_DEPTH} levels",
                                where=f"{self.source}:{event.start_mark.line + 1}", fix=FLATTEN)
        elif isinstance(event, yaml.CollectionEndEvent):
            self.depth -= 1
        return event


@dataclass(frozen=True)
class Excess:
    """Where a value first goes past a bound.

    Attributes:
        what: the bound it passes, in plain words.
        loc: the keys and indexes from the top down to the part at fault.
        fix: what the user should do about it.
    """

    what: str
    loc: tuple
    fix: str


def find_excess(value: Any, max_bytes: int = MAX_SPEC_BYTES) -> Excess | None:
    """The first place where plain data (dicts, lists, scalars) nests deeper than `MAX_DEPTH` or
    makes its compact JSON longer than `max_bytes`; None when it stays within both.

    Walks with an explicit stack and stops at the first excess, so a value that nests thousands of
    levels deep, refers to itself, or repeats a part many times over (YAML aliases) costs at most
    `max_bytes` steps.
    """
    size = 0
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict | list | tuple):
            if len(loc) + 1 > MAX_DEPTH:
                return Excess(f"nested deeper than {MAX_DEPTH} levels", loc, FLATTEN)
            pairs = list(item.items()) if isinstance(item, dict) else list(enumerate(item))
            size += 2 + max(len(pairs) - 1, 0)   # brackets and commas
            if isinstance(item, dict):
                size += sum(_scalar_bytes(str(key)) + 1 for key, _ in pairs)   # keys and colons
            stack.extend((child, (*loc, key)) for key, child in reversed(pairs))
        else:
            size += _scalar_bytes(item)
        if size > max_bytes:
            return Excess(f"the spec is over {max_bytes} bytes as JSON here", loc,
                          "keep large data in files the spec names, not in the spec")
    return None


def _scalar_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(json.dumps(value))
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2   # at least its digits and sign, without converting it
    return len(str(value)) + 2   # floats; dates and bytes (YAML) are stored as quoted strings
