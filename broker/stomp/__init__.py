"""STOMP 1.0, 1.1 and 1.2 for existing clients: the codec, the connection machine, and
the asyncio transport that carries the machine's actions out against the broker core."""
