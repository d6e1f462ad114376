"""One broker's gRPC adapters: they feed requests into the core and carry its answers out."""
