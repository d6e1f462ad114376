"""netbroker: one broker (core, server), the Python client, cluster operations, the CLI."""

__version__ = "0.1.0"
