"""The netbroker Python client: async-first on grpc.aio, with a thin blocking facade.

Connect with a client URL, either ``host:port`` or
``failover:(host:port,host:port)?options``::

    async with await Client.connect("failover:(127.0.0.1:61616,127.0.0.1:61617)") as client:
        await client.send("orders", b"hello")               # waits for the broker's ack

        producer = client.producer()                         # pipelined, batched sends
        for body in bodies:
            await producer.send("orders", body)              # returns a future per message
        await producer.flush()                               # everything acked (or raises)

        consumer = await client.subscribe("orders", prefetch=1000)
        async for delivery in consumer:
            handle(delivery.body)
            delivery.ack()

    Topics (publish/subscribe) read the same way: ``subscribe(topic="prices.>")`` (``*``
    matches one dot-separated segment, ``>`` the rest) returns once the subscription is
    in place; ``publish("prices.eu", b"42")`` reaches every subscription present. With
    ``subscription=`` and ``client_id=`` the subscription is durable: the broker keeps
    messages for it while no subscriber holds it; ``unsubscribe(client_id, name)``
    removes it.

Every stream carries batches (see ``proto/client.proto``): the producer gathers what was
queued since its last write into one request and keeps several batches in flight; the
consumer acknowledges in batches and returns credit in the same requests.

A failover client survives the loss of its broker: it moves to the next address that
accepts (backing off from ``initialReconnectDelay`` to ``maxReconnectDelay``), resends
every batch the broker had not acknowledged under the same message ids (the broker's
duplicate check keeps them single) and resubscribes its consumers (the broker redelivers
what the old stream held, marked redelivered). A plain ``host:port`` client raises
:class:`ConnectionLost` instead. Reconnects are logged on the ``netbroker.client`` logger.

Delivery is at least once: a message is gone only once its ack reached the broker, so a
consumer may see a message again (``redelivered`` set) after a failover or a crash.

A :class:`Client` belongs to the event loop it was connected on. Synchronous code uses
:class:`BlockingClient`, which runs one on a private event loop in a daemon thread.
"""

from __future__ import annotations

from broker.client.blocking import BlockingClient, BlockingConsumer, BlockingProducer
from broker.client.connection import Client
from broker.client.consumer import Consumer, Delivery
from broker.client.errors import ConnectionLost, is_failover_code
from broker.client.producer import Producer
from broker.client.url import ClientUrl, parse_url
from broker.errors import BrokerError
from broker.ids import new_message_id
from broker.reconnect import AddressRotation, Backoff

__all__ = [
    "AddressRotation",
    "Backoff",
    "BlockingClient",
    "BlockingConsumer",
    "BlockingProducer",
    "BrokerError",
    "Client",
    "ClientUrl",
    "ConnectionLost",
    "Consumer",
    "Delivery",
    "Producer",
    "is_failover_code",
    "new_message_id",
    "parse_url",
]
