"""Argument types the commands share."""

from __future__ import annotations

import argparse


def eval_kind(value: str) -> str:
    """An evaluation kind in any spelling (custom-scorer, custom_scorer, customscorer)."""
    from evalstack.runtime.execution import normalize_eval_type  # at parse time, only by commands that run

    try:
        return normalize_eval_type(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("eval_type: ")) from err
