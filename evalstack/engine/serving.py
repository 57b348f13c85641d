"""How a role's model was served, when the job served it itself (a model package or JumpStart model).

The evaluate step knows the backend; the report step, another process, writes results.json. So the
step leaves one small file per shard beside its records (``<records>/serving/shard-*.json``, from the
backend's ``serving_details()``) and the report puts it under ``details.serving`` with the scoring mode.
"""

from __future__ import annotations

import json
import re
from typing import Any

from evalstack import storage

_NAME = re.compile(r"shard-\d{5}-of-\d{5}\.json")
_MODE_NAMES = {"generate": "generative"}


def record_serving(
    records_prefix: str, shard_index: int, shard_count: int, model: Any, *, kms_key_id: str | None
) -> None:
    """Write the backend's serving details for this shard; backends that serve nothing themselves write none."""
    describe = getattr(model, "serving_details", None)
    details = describe() if callable(describe) else None
    if details:
        uri = storage.join(records_prefix, "serving", f"shard-{shard_index:05d}-of-{shard_count:05d}.json")
        storage.write_text(uri, json.dumps(details, sort_keys=True) + "\n", kms_key_id=kms_key_id)


def add_serving(details: dict[str, Any], records_prefix: str) -> None:
    """Put the shards' serving details (one dict when they agree, else each distinct one) into ``details``."""
    folder = storage.join(records_prefix, "serving")
    # Only this step's own file names directly in the folder: a key planted deeper is not one of them.
    uris = sorted(uri for uri in storage.list_uris(folder) if _NAME.fullmatch(uri.removeprefix(folder + "/")))
    found = list({text: json.loads(text) for text in (storage.read_text(uri) for uri in uris)}.values())
    if not found:
        return
    # Judge and custom-scorer runs score generations; a benchmark says which mode(s) it used.
    modes = details.get("scoring_mode", "generate")
    named = [_MODE_NAMES.get(m, m) for m in modes] if isinstance(modes, list) else _MODE_NAMES.get(modes, modes)
    served = [{**entry, "scoring_mode": named} for entry in found]
    details["serving"] = served[0] if len(served) == 1 else served
