"""Text that ends up as one line of a file, a key or a printed snippet: no control characters.

A tab in an S3 prefix makes a key nobody can type; a newline in a URL printed into a
sources snippet injects a field (``Suites: evil``). Every such value goes through
:func:`check_one_line` where it enters releng (the configuration, a command-line flag,
an S3 URL), so it is refused in one line before anything is written.
"""

from __future__ import annotations

import re

from releng.errors import RelengError

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls (tab, newline, ...) and DEL
_NAMES = {"\t": "a tab", "\n": "a newline", "\r": "a carriage return", "\x7f": "DEL"}


def control_character(text: str) -> str | None:
    """The first control character of ``text``, named (``a tab``, ``U+001B``); None: none."""
    m = CONTROL_RE.search(text)
    if m is None:
        return None
    return _NAMES.get(m[0], f"U+{ord(m[0]):04X}")


def check_one_line(
    text: str, *, what: str, error: type[RelengError] = RelengError, advice: str = ""
) -> str:
    """``text`` when it holds no control character; else ``error`` naming ``what`` and it."""
    found = control_character(text)
    if found is not None:
        raise error(
            f"{what} {text!r} holds {found}; "
            + (advice or "remove control characters (tabs, newlines): it must be one line")
        )
    return text
