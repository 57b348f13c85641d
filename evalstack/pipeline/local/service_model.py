"""The part of botocore's SageMaker service model that the local client speaks, cached per botocore version.

The local client validates every request against botocore's own model, as boto3 does. Loading the whole
model means importing botocore's session and decoding a 2.6 MB JSON document: about 0.2 s, most of what a
small local run spends in its client. The operations the local client implements reach a few dozen of
its 3,260 shapes, so the first use writes those operations, the shapes they reach, the service's error
shapes (the client's ``exceptions``) and their paginators to a cache file named after botocore's version,
under ``$XDG_CACHE_HOME/evalstack`` (default ``~/.cache/evalstack``), written atomically; later clients
read that file. A cache that cannot be read is rebuilt; one that cannot be written is skipped. The
model comes straight from botocore when its data is overridden (``AWS_DATA_PATH``, ``~/.aws/models``).
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

import botocore
from botocore.model import ServiceModel
from botocore.paginate import PaginatorModel

from evalstack import storage

SERVICE = "sagemaker"
# What LocalSageMakerClient implements; a cache written for another list is rebuilt.
OPERATIONS = (
    "CreatePipeline",
    "DescribePipeline",
    "DescribePipelineExecution",
    "ListPipelineExecutionSteps",
    "ListPipelineExecutions",
    "RetryPipelineExecution",
    "StartPipelineExecution",
    "StopPipelineExecution",
    "UpdatePipeline",
)
CACHE_DIR_ENV = "XDG_CACHE_HOME"
logger = logging.getLogger(__name__)


def cache_path() -> Path:
    root = os.environ.get(CACHE_DIR_ENV) or str(Path.home() / ".cache")
    return Path(root) / "evalstack" / f"botocore-{botocore.__version__}-{SERVICE}-local.json"


def _overridden() -> bool:
    """botocore reads models from these places before its own data: then only botocore knows the model."""
    return bool(os.environ.get("AWS_DATA_PATH")) or (Path.home() / ".aws" / "models" / SERVICE).exists()


def _reachable(shapes: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """``roots`` and every shape they refer to (structure members, list members, map keys and values)."""
    kept: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        shape = kept[name] = shapes[name]
        refs = list(shape.get("members", {}).values()) + [shape[k] for k in ("member", "key", "value") if k in shape]
        todo.extend(ref["shape"] for ref in refs)
    return kept


def subset(service: dict[str, Any], paginators: dict[str, Any]) -> dict[str, Any]:
    """The cached document: OPERATIONS of ``service`` with what they reach, and their paginators."""
    operations = {name: service["operations"][name] for name in OPERATIONS}
    roots = [s for s, shape in service["shapes"].items() if shape.get("exception")]
    for operation in operations.values():
        refs = [operation.get("input"), operation.get("output"), *operation.get("errors", [])]
        roots.extend(ref["shape"] for ref in refs if ref)
    return {
        "botocore": botocore.__version__,
        "operations": list(OPERATIONS),
        "service": {
            **{k: v for k, v in service.items() if k not in ("operations", "shapes")},
            "operations": operations,
            "shapes": _reachable(service["shapes"], roots),
        },
        "paginators": {"pagination": {k: v for k, v in paginators["pagination"].items() if k in OPERATIONS}},
    }


def _from_botocore() -> dict[str, Any]:
    import botocore.session

    session = botocore.session.get_session()
    paginators = session.get_component("data_loader").load_service_model(SERVICE, "paginators-1")
    return subset(session.get_service_data(SERVICE), paginators)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, unreadable or torn: rebuilt from botocore
    if not isinstance(document, dict) or document.get("botocore") != botocore.__version__:
        return None
    return document if document.get("operations") == list(OPERATIONS) else None


def _document() -> dict[str, Any]:
    if _overridden():
        return _from_botocore()
    path = cache_path()
    document = _read(path)
    if document is None:
        document = _from_botocore()
        try:
            storage.write_bytes(str(path), json.dumps(document).encode("utf-8"), replace=True)
        except OSError as err:
            # A read-only home: every client loads the model from botocore, as it did without the cache.
            logger.debug("could not cache the local SageMaker service model at %s: %s", path, err)
    return document


@cache
def models() -> tuple[ServiceModel, PaginatorModel]:
    """The service model and the paginator model the local client validates and paginates with."""
    document = _document()
    return ServiceModel(document["service"], SERVICE), PaginatorModel(document["paginators"])
