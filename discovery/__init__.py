"""Zeroconf discovery behind `multicast://NAME` connectors.

* `discovery.records`: what a broker advertises (`Advert`, its TXT record and instance
  name) and which addresses it may advertise. Pure.
* `discovery.selection`: `PeerSelector`, the decision "which discovered brokers should
  this broker bridge to". Pure: no zeroconf, no sockets, no clock.
* `discovery.service`: `DiscoveryService`, the thin python-zeroconf adapter. Zeroconf runs
  on a thread (and event loop) of its own; what it finds is handed to the broker's loop.

`netconnector.multicast` ties these to the network of brokers: it feeds sightings to the
selectors of the multicast connectors, opens a bridge per selected peer, and advertises
while the broker serves.
"""
