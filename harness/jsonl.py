"""Reading JSONL artifacts line by line, with errors that name the file and the line.

Lines are split at "\n" only: ``str.splitlines`` also breaks at U+2028, U+0085 and other
characters that JSON strings (generated text included) may hold unescaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def jsonl_lines(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line; an unreadable file raises ``error``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield number, line


def json_objects(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line; a line that is not a JSON object raises
    ``error`` naming the file and the line."""
    for number, line in jsonl_lines(path, error):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise error(f"{path}: line {number}: expected a JSON object")
        yield number, obj
