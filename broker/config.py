"""A broker's settings: what the CLI and topology files set, with production defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


def master_fsyncs(sync: str) -> bool:
    """Whether a broker fsyncs its own writes before acknowledging them under `sync`."""
    return sync in ("local_disk", "quorum_disk")


@dataclass(frozen=True)
class BrokerConfig:
    name: str
    port: int
    data_dir: Path
    host: str = "127.0.0.1"
    # Largest message a broker accepts, whole as serialized (body, headers, id, queue
    # name and the rest); gRPC's own limits are raised to match.
    max_message_bytes: int = 100 * MiB
    # Bounds on a message's parts, each refused with INVALID_ARGUMENT past it (ActiveMQ's
    # STOMP limits for headers): an id is kept in the duplicate check long after its
    # message, and headers are copied with the message on every hop.
    max_id_length: int = 1024
    max_headers: int = 1000
    max_header_length: int = 10 * 1024
    # When a persistent send is answered: "local_disk" once fsynced here; "local_mem"
    # once written here without fsync (survives a process crash, not a power loss); in a
    # group "quorum_mem" once every in-sync member holds it, "quorum_disk" once every
    # in-sync member has fsynced it.
    sync: str = "local_disk"
    # A message handed out this many times without an ack goes to DLQ.<queue> next time.
    max_redeliveries: int = 6
    # Pending persistent messages kept in memory per queue; the rest are paged from the
    # store as the window drains.
    memory_window: int = 10_000
    # Bytes of non-persistent messages the broker holds before producers are slowed.
    nonpersistent_memory_limit: int = 256 * MiB
    # Ids of consumed messages remembered for the duplicate check, so that a failover
    # resend of a message already consumed is not delivered again.
    dedup_window: int = 1_000_000
    # How often expired pending messages are swept to their DLQ, in seconds.
    expiry_interval: float = 1.0
    # The master/slave group this broker belongs to ("" for none).
    group: str = ""
    # Network connector URIs (options in the query string), e.g. "static:(h:p)?networkTTL=2".
    connectors: tuple[str, ...] = ()
    # Shared secret that links and replication connections must present ("" accepts any).
    token: str = ""
    # multicast:// connectors: the addresses of the interfaces zeroconf advertises and
    # browses on (always explicit: zeroconf alone would use every interface), and a token
    # whose digest goes in the record so that other clusters' brokers are ignored.
    discovery_interfaces: tuple[str, ...] = ("127.0.0.1",)
    discovery_token: str = ""
    # Master/slave: "" (standalone), "zookeeper" or "lockfile".
    election: str = ""
    zookeeper: str = ""
    zk_path: str = ""
    replication_port: int = 0
    replicas: int = 1
    # Smallest in-sync set that may acknowledge (0: replicas/2+1 for 3 or more, else 1).
    min_insync: int = 0
    weight: int = 1
    session_timeout: float = 1.0
    # A slave that acknowledges nothing for this long while behind leaves the in-sync set.
    lag_timeout: float = 1.0
    # A persistent send the in-sync set has not acknowledged by then fails (UNAVAILABLE).
    commit_timeout: float = 10.0
    # Lock-file mode: the store directory the members share.
    shared_dir: Path | None = None

    @property
    def path_name(self) -> str:
        """This broker's name in broker paths. The members of a master/slave group share
        one, the group's: a forward is the group's, so a new master's resend of what the
        old one forwarded is the same hop, and loops are judged group by group."""
        return self.group if self.election and self.group else self.name

    @property
    def client_address(self) -> str:
        return f"{self.host}:{self.port}"

    def grpc_options(self) -> list[tuple[str, int]]:
        # Headroom over the body limit for headers, ids and the batch envelope.
        limit = self.max_message_bytes + MiB
        return [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
