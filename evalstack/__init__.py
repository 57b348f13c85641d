"""evalstack: LLM evaluation pipelines for AWS that also run on one machine."""

__version__ = "0.1.0"
