"""Master/slave groups: election, store replication, quorum acknowledgements, lock files.

Split as docs/architecture.md describes: the decisions are pure classes with no I/O, no
asyncio and no clock reads (time comes in as a float `now`), tested directly; kazoo, gRPC and file
locks are thin adapters that feed them events and carry out their answers.

Pure logic:

* `masterslave.election`: member and in-sync node data (`Member`, `IsrState`) and
  `choose_master`, which says `Elect`, `Keep` or `Wait` (with a reason for the status).
  Only an in-sync member may become master; then the most up-to-date log, weight, age.
* `masterslave.replog`: the master's in-memory `ReplicationLog` window;
  `catch_up_plan` (stream a returning follower from its position, or send a bulk copy
  when it is too far behind or its log diverges after a failover).
* `masterslave.acks`: `AckTracker`, which turns followers' acknowledgements into the
  committed position under the `sync` mode and `min_insync`, and finds lagging followers.
* `masterslave.lag`: `replica_lags`, each follower's lag (entries, seconds) as the
  master's tracker sees it, for the status and the metrics.
* `masterslave.isr`: `new_epoch` for a newly elected master, and `IsrPolicy`, which
  shrinks and expands the in-sync set in an order that keeps its promise (every
  member holds every acknowledged write) at every moment.

Adapters: `masterslave.zk` (kazoo), `masterslave.replication` (gRPC streams),
`masterslave.group` (one member's controller), `masterslave.lockfile` (single-machine
mode without ZooKeeper).

Log positions number store writes 1, 2, 3, ...; every entry carries the epoch of the
master that wrote it, and the in-sync node records where each epoch began, which is
how a returning member's log is checked against the master's.
"""
