"""The no-loops, no-stuck-messages rule for forwarding one message over one bridge.

A message's *broker path* lists the brokers it has been stored on, in order: the broker
it was produced on first and the broker holding it now (the *holder*) last. A message
produced on A and forwarded to B has the path `[A, B]` while B holds it.

`may_forward(path, target, holder_has_local_consumers, message_ttl)` counts two budgets,
both bounded by `messageTTL` (which defaults to `networkTTL`, as in ActiveMQ):

* **New brokers.** Forwarding to a broker not on the path is allowed while the message
  has reached fewer than `messageTTL` brokers besides its origin:
  `len(set(path)) - 1 < messageTTL`. This is ActiveMQ's meaning of messageTTL (how many
  brokers a message may pass through); it needs no local-consumer check because a broker
  seen for the first time cannot close a loop.
* **Going back.** Forwarding to a broker already on the path is allowed only when the
  holder has no local consumer for the message (otherwise it would just leave consumers
  that can take it, and two brokers with consumers could bounce it forever) and the
  message has gone back fewer than `messageTTL` times:
  `len(path) - len(set(path)) < messageTTL`. This is what lets messages follow consumers
  that moved back to where the messages came from, while a message whose consumers keep
  moving settles after a bounded number of trips rather than bouncing indefinitely.

Distinct brokers are counted for the first budget so that a return trip does not use up
the allowance for reaching new brokers: a message that followed a consumer back to A can
still follow it on to a broker it has never visited, if messageTTL allows.

With the default messageTTL of 1:

    path at holder   target  holder has consumers  allowed  why
    [A]              B       -                     yes      0 new brokers reached < 1
    [A, B]           C       -                     no       1 new broker reached, not < 1
    [A, B]           A       yes                   no       never leave local consumers
    [A, B]           A       no                    yes      0 returns < 1
    [A, B, A]        B       no                    no       1 return, not < 1 (needs 2)

Every permitted hop uses one of the two budgets, so a message crosses at most
`2 * messageTTL` bridges: forwarding always ends. Timing (e.g. not sending a message
straight back the instant it arrives) is the bridge's concern, not this rule's.
"""

from __future__ import annotations

from collections.abc import Sequence


def brokers_reached(broker_path: Sequence[str]) -> int:
    """How many distinct brokers besides the origin the message has been on."""
    return len(set(broker_path)) - 1


def returns_taken(broker_path: Sequence[str]) -> int:
    """How many times the message was forwarded to a broker it had already been on."""
    return len(broker_path) - len(set(broker_path))


def may_forward(
    broker_path: Sequence[str],
    target: str,
    holder_has_local_consumers: bool,
    message_ttl: int,
) -> bool:
    """Whether the holder (`broker_path[-1]`) may forward the message to `target`.

    See the module docstring for the rule and its arithmetic. `holder_has_local_consumers`
    is whether the holder has a local (not network) consumer for the message's queue.
    """
    if not broker_path:
        raise ValueError("a broker path names at least the holder")
    if message_ttl < 1:
        raise ValueError(f"messageTTL must be at least 1, got {message_ttl}")
    if target == broker_path[-1]:
        return False  # a broker never forwards to itself
    if len(broker_path) == 1:
        return True  # still on its origin: neither budget used (the common case, so first)
    if target not in broker_path:
        return brokers_reached(broker_path) < message_ttl
    if holder_has_local_consumers:
        return False
    return returns_taken(broker_path) < message_ttl
