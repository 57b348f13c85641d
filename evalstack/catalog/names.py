"""Case-insensitive name resolution shared by every catalog lookup."""

from collections.abc import Iterable
from enum import Enum


def resolve_name(value: str | Enum, valid: Iterable[str], what: str) -> str:
    """Return the canonical spelling of ``value`` among ``valid``, ignoring case.

    Raises ValueError naming ``what`` and listing every valid name, so a typo is fixable
    from the message alone.
    """
    if isinstance(value, Enum):
        value = value.value
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    names = list(valid)
    by_key = {name.casefold(): name for name in names}
    found = by_key.get(value.strip().casefold())
    if found is None:
        raise ValueError(f"Unknown {what} {value!r}. Valid values: {', '.join(names)}")
    return found
