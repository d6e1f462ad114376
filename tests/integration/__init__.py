"""Tests against real processes: brokers, ZooKeeper, network namespaces, the CLI."""
