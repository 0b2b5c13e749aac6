"""Use cases: each owns its transaction and serves the API, the CLI and the workers."""
