"""One netbroker broker: store, queues and dispatch, client service, CLI and Python client."""

__version__ = "0.1.0"
