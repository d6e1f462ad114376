"""One broker: its queues, store, commit pipeline and memory bound. No gRPC, no cluster."""
