"""Stand-in for vLLM in tests (see api_server.py)."""
