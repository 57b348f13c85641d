"""User datasets for custom-scorer and LLM-as-judge evaluations: streaming, validated readers."""

from evalstack.data.reader import DatasetReader, DatasetSummary, iter_records, resolve_format, scan_dataset
from evalstack.data.records import REFERENCE_ALIASES, DatasetError, Record

__all__ = [
    "REFERENCE_ALIASES",
    "DatasetError",
    "DatasetReader",
    "DatasetSummary",
    "Record",
    "iter_records",
    "resolve_format",
    "scan_dataset",
]
