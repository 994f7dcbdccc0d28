"""The one base class of errors caused by the user's input (config, data, paths, answers).

The CLI prints such an error's message as is and exits 2; anything else is a bug, reported in
one line (its traceback with ``prunescope --debug``). Messages name the file, the record and
the field.
"""

from __future__ import annotations

from pathlib import Path


class PrunescopeError(Exception):
    """Bad input, stated so the user can fix it."""


def read_text(path: str | Path, what: str = "text file") -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file is a
    PrunescopeError naming the path (and the offset of the first bad byte)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PrunescopeError(f"{path}: {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                              f"at offset {exc.start}); convert it, e.g. iconv -t UTF-8") from None
    except OSError as exc:
        raise PrunescopeError(f"{path}: cannot read {what}: {exc.strerror}") from None
