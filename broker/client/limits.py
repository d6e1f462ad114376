"""The client's limits and timings: message and batch sizes, probe, stall and close times."""

from __future__ import annotations

MiB = 1024 * 1024

#: gRPC's message size limits: the broker's default message limit (100 MiB) plus headroom.
MAX_GRPC_MESSAGE_BYTES = 101 * MiB
#: The largest message (body, headers and queue name) the client will send: gRPC's limit
#: less room for the message's other fields and the batch around it.
MAX_MESSAGE_BYTES = MAX_GRPC_MESSAGE_BYTES - 64 * 1024
#: A produce batch holds at most this many messages ...
MAX_BATCH_MESSAGES = 256
#: ... and about this many body bytes (a single larger message travels alone).
MAX_BATCH_BYTES = 4 * MiB
#: Consumer acks wait at most this long before they are written.
ACK_FLUSH_INTERVAL = 0.020
#: How long a connection probe (an Admin.Status call) may take ...
PROBE_TIMEOUT = 5.0
#: ... and with other addresses to try: a broker answers it in milliseconds, and a
#: frozen one would otherwise hold up the next address (a new master) for long.
FAILOVER_PROBE_TIMEOUT = 1.0
#: With several addresses, a probe not answered by then goes on while the next address
#: is tried too.
PROBE_HEAD_START = 0.2
#: The longest pause before asking again when the last broker asked answered but does
#: not serve (a slave, or electing): its group is choosing a master, which takes well
#: under a second, and the client must reach it about as soon as it is elected.
ELECTING_POLL = 0.1
#: A connection that lived this long counts as stable: the next loss retries at once.
STABLE_CONNECTION_SECONDS = 1.0
#: How long closing a stream waits for the broker to end it before cancelling it.
CLOSE_GRACE_SECONDS = 5.0
# A durable topic subscriber resubscribing after a lost stream may find the broker still
# holding the old stream's subscription (it has not seen that stream die yet): it asks
# again every RESUBSCRIBE_RETRY seconds for up to RESUBSCRIBE_PATIENCE, well past the
# broker's keepalive, before giving up with the broker's refusal.
RESUBSCRIBE_RETRY = 0.2
RESUBSCRIBE_PATIENCE = 10.0
#: A produce stream with a batch unanswered this long, and no answer at all meanwhile,
#: is checked: the broker is asked (Admin.Status) whether it still serves. Keepalive
#: catches a frozen broker; this catches one whose loop stalled or that stopped serving
#: without ending its streams. A broker holding producers back (memory, quorum) answers
#: that it serves, and the stream goes on waiting.
STALL_SECONDS = 2.0
