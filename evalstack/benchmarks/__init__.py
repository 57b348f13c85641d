"""The 11 benchmarks: data adapters, prompts, scoring and aggregation (see docs/benchmarks.md)."""
