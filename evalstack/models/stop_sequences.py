"""Client-side stop sequences, for servers that echo the stop string or ignore it."""

from __future__ import annotations


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop sequence."""
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text
