"""``evalstack view``: a local, read-only web viewer of evaluation executions (cli layer: may use the runtime)."""
