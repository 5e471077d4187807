"""Advice for a name nobody has: the closest known one, and the known ones listed.

The CLI and the search service answer a mistyped source, collection, option or field the same
way: `'x' ... (did you mean 'y'?); known: a, b`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known(names: Iterable[str]) -> str:
    """The names sorted and comma-separated, or 'none'."""
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"
