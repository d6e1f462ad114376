"""Network connectors: bridges that forward a queue's pending messages to brokers with demand.

The package is split into pure decision logic, tested directly, and thin adapters that do
I/O (see docs/semantics.md, "Network connectors"):

* `netconnector.uri` parses connector URIs (`static:`, `masterslave:`, `multicast://`)
  and their options into a `ConnectorSpec`.
* `netconnector.filters` matches queue names against `*` / `>` destination patterns to
  decide which queues a connector may forward.
* `netconnector.demand` is one broker's demand table: which queues have consumers, how
  many hops away, what to advertise to each neighbour and where to register network
  consumers.
* `netconnector.forwarding` is the rule that keeps forwarded messages out of loops
  without leaving them stuck when consumers move.

None of these modules does I/O, starts tasks or imports gRPC.
"""
