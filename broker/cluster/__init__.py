"""Cluster operations: the topology file, planning and running a cluster, ZooKeeper."""
