"""The STOMP connection machine, event by event: negotiation, heart-beats with time
passed in, the ack modes, transactions, receipts, and an ERROR then close for every
violation."""

from __future__ import annotations

import pytest

from broker.core.queue import Entry
from broker.pb.message_pb2 import Message
from broker.stomp import session as s
from broker.stomp.frames import SERVER_COMMANDS, Escaping, Frame, FrameParser, Limits, encode


class Client:
    """Drives a session as a client would and reads what it writes back."""

    def __init__(self, version: str = "1.2", heartbeat: str = "0,0", **kw: object) -> None:
        self.now = 100.0
        self.session = s.StompSession("sess-1", self.now, **kw)  # type: ignore[arg-type]
        self.parser = FrameParser(Limits(), SERVER_COMMANDS)
        self.actions: list[s.Action] = []
        if version:
            headers = [("accept-version", version), ("host", "h")]
            if heartbeat:
                headers.append(("heart-beat", heartbeat))
            self.connected = self.frame("CONNECT", headers)[0]
            self.parser.escaping = {"1.0": 0, "1.1": 1}.get(self.session.version, 2)

    def send(self, data: bytes) -> list[Frame]:
        return self._out(self.session.receive(data, self.now))

    def frame(self, command: str, headers: list[tuple[str, str]], body: bytes = b"") -> list[Frame]:
        escaping = {"1.0": 0, "1.1": 1}.get(self.session.version, 2)
        return self.send(encode(command, headers, body, escaping))

    def _out(self, actions: list[s.Action]) -> list[Frame]:
        self.actions = actions
        frames: list[Frame] = []
        for action in actions:
            if isinstance(action, s.Write) and action.data != b"\n":
                frames.extend(self.parser.feed(action.data))
        return frames

    def of(self, kind: type) -> list[s.Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    def deliver(self, sub: int, *messages: Message, first_tag: int = 1) -> list[Frame]:
        batch = [(first_tag + i, Entry(m, i + 1, m.ByteSize())) for i, m in enumerate(messages)]
        return self._out(self.session.deliver(sub, batch, self.now))

    def sent(self, token: int, error: str | None = None) -> list[Frame]:
        return self._out(self.session.sent(token, error, self.now))


def _msg(mid: str, body: bytes = b"x", **kw: object) -> Message:
    return Message(id=mid, destination="q", body=body, **kw)  # type: ignore[arg-type]


def _closed_with_error(c: Client, frames: list[Frame], text: str) -> Frame:
    errors = [f for f in frames if f.command == "ERROR"]
    assert errors, frames
    assert text in errors[0].headers["message"], errors[0].headers["message"]
    assert c.of(s.Close)
    assert c.session.closed
    return errors[0]


# -- negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [("1.2", "1.2"), ("1.0,1.1,1.2", "1.2"), ("1.1", "1.1"), ("1.0,1.1", "1.1"), ("1.0", "1.0")],
)
def test_version_negotiation(offered: str, chosen: str) -> None:
    c = Client(offered)
    assert c.connected.command == "CONNECTED"
    assert c.connected.headers["version"] == chosen
    assert c.connected.headers["session"] == "sess-1"
    assert c.connected.headers["server"].startswith("netbroker")


def test_no_accept_version_is_10_and_stomp_frame_connects_too() -> None:
    c = Client("")
    frames = c.send(b"CONNECT\n\n\0")
    assert frames[0].headers["version"] == "1.0"
    assert "heart-beat" not in frames[0].headers
    c = Client("")
    frames = c.send(b"STOMP\naccept-version:1.2\nhost:x\n\n\0")
    assert frames[0].headers["version"] == "1.2"


def test_no_common_version() -> None:
    c = Client("")
    frames = c.send(b"CONNECT\naccept-version:2.0,3.1\n\n\0")
    error = _closed_with_error(c, frames, "no common version")
    assert error.headers["version"] == "1.0,1.1,1.2"


def test_frames_before_connect_and_a_second_connect() -> None:
    c = Client("")
    _closed_with_error(c, c.send(b"SEND\ndestination:a\n\n\0"), "expected CONNECT or STOMP")
    c = Client()
    _closed_with_error(c, c.frame("CONNECT", [("accept-version", "1.2")]), "CONNECT is not allowed")


def test_nothing_is_read_after_close() -> None:
    c = Client()
    c.send(b"FROB\n\n\0")
    assert c.session.closed
    assert c.send(b"SEND\ndestination:a\n\nx\0") == []
    assert c.actions == []


# -- heart-beats -----------------------------------------------------------------------


def test_heartbeat_negotiation_and_deadlines() -> None:
    c = Client(heartbeat="500,2000", heartbeat_ms=1000)
    assert c.connected.headers["heart-beat"] == "1000,1000"
    # We send at max(ours 1000, wanted 2000); we expect at max(offered 500, ours 1000).
    assert c.session.send_every == 2.0
    assert c.session.expect_every == 1.0
    assert c.session.next_deadline() == pytest.approx(102.0)
    c.now = 101.5
    c.send(b"\n")  # a client heart-beat
    c.now = 102.0
    actions = c.session.tick(c.now)
    assert [a for a in actions if isinstance(a, s.Write)] == [s.Write(b"\n")]
    # Silent client: dead once twice its interval passed since it last spoke.
    c.now = 103.4
    assert not any(isinstance(a, s.Close) for a in c.session.tick(c.now))
    c.now = 103.6
    frames = c._out(c.session.tick(c.now))
    _closed_with_error(c, frames, "no heart-beat from the client")


def test_no_heartbeats_when_either_side_says_zero() -> None:
    c = Client(heartbeat="0,0")
    assert c.session.send_every == 0 and c.session.expect_every == 0
    assert c.session.next_deadline() is None
    c = Client(heartbeat="0,100", heartbeat_ms=1)
    assert c.session.send_every == s.MIN_HEARTBEAT_MS / 1000  # never faster than the floor


def test_bad_heartbeat_header() -> None:
    c = Client("")
    frames = c.send(b"CONNECT\naccept-version:1.2\nheart-beat:fast\n\n\0")
    _closed_with_error(c, frames, "heart-beat 'fast' is not two numbers")


# -- send ------------------------------------------------------------------------------


def test_send_maps_headers_and_receipt_waits_for_the_store() -> None:
    c = Client()
    frames = c.frame(
        "SEND",
        [("destination", "/queue/orders"), ("receipt", "r1"), ("persistent", "true"),
         ("priority", "7"), ("expires", "1999999999999"), ("JMSXGroupID", "g"),
         ("content-type", "text/plain"), ("x-custom", "a:b")],
        b"body",
    )  # fmt: skip
    assert frames == []  # no RECEIPT before the store answers
    (send,) = c.of(s.Send)
    assert isinstance(send, s.Send)
    m = send.message
    assert (m.destination, m.body, m.persistent, m.priority) == ("orders", b"body", True, 7)
    assert m.expiration_ms == 1999999999999
    assert dict(m.headers) == {"JMSXGroupID": "g", "content-type": "text/plain", "x-custom": "a:b"}
    frames = c.sent(send.token)
    assert [(f.command, f.headers) for f in frames] == [("RECEIPT", {"receipt-id": "r1"})]


def test_send_defaults_bare_names_and_refusals() -> None:
    c = Client()
    c.frame("SEND", [("destination", "plain")], b"x")
    (send,) = c.of(s.Send)
    assert isinstance(send, s.Send)
    assert (send.message.destination, send.message.persistent, send.message.priority) == (
        "plain", False, 4,
    )  # fmt: skip
    # A store refusal ends the connection with its reason.
    frames = c.sent(send.token, "message body is too big")
    _closed_with_error(c, frames, "message body is too big")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([], "no destination"),
        ([("destination", "/topic/news.*")], "has a wildcard"),
        ([("destination", "/topic/")], "topic name"),
        ([("destination", "/temp-queue/x")], "use /queue/NAME"),
        ([("destination", "/queue/")], "queue name is empty"),
        ([("destination", "a"), ("priority", "10")], "priority '10' is not 0-9"),
        ([("destination", "a"), ("priority", "high")], "is not 0-9"),
        ([("destination", "a"), ("expires", "soon")], "expires 'soon'"),
        ([("destination", "a"), ("transaction", "nope")], "no open transaction"),
    ],
)
def test_bad_sends(headers: list[tuple[str, str]], error: str) -> None:
    c = Client()
    frames = c.frame("SEND", [*headers, ("receipt", "r9")], b"x")
    err = _closed_with_error(c, frames, error)
    assert err.headers["receipt-id"] == "r9"
    assert not c.of(s.Send)


# -- subscriptions and acks --------------------------------------------------------------


def _subscribed(mode: str, version: str = "1.2", **extra: str) -> Client:
    c = Client(version)
    frames = c.frame(
        "SUBSCRIBE",
        [("id", "s1"), ("destination", "/queue/q"), ("ack", mode), ("receipt", "sub"),
         *extra.items()],
    )  # fmt: skip
    assert [f.headers for f in frames] == [{"receipt-id": "sub"}]
    return c


def test_subscribe_prefetch_and_limits() -> None:
    c = _subscribed("auto", **{"activemq.prefetchSize": "5"})
    assert c.of(s.Subscribe) == [s.Subscribe(1, "q", 5)]
    c = _subscribed("client", **{"activemq.prefetchSize": "999999"})
    assert c.of(s.Subscribe) == [s.Subscribe(1, "q", s.MAX_PREFETCH)]
    c = _subscribed("client-individual")
    assert c.of(s.Subscribe) == [s.Subscribe(1, "q", s.DEFAULT_PREFETCH)]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([("destination", "q")], "no id header"),
        ([("id", "1")], "no destination"),
        ([("id", "1"), ("destination", "q"), ("ack", "sometimes")], "ack mode 'sometimes'"),
        ([("id", "1"), ("destination", "q"), ("activemq.prefetchSize", "0")], "prefetchSize"),
    ],
)
def test_bad_subscribes(headers: list[tuple[str, str]], error: str) -> None:
    c = Client()
    _closed_with_error(c, c.frame("SUBSCRIBE", headers), error)


def test_duplicate_subscription_id_and_unknown_unsubscribe() -> None:
    c = _subscribed("auto")
    _closed_with_error(
        c, c.frame("SUBSCRIBE", [("id", "s1"), ("destination", "q")]), "already in use"
    )
    c = _subscribed("auto")
    _closed_with_error(c, c.frame("UNSUBSCRIBE", [("id", "zz")]), "no subscription with id")


def test_auto_acks_on_delivery_and_returns_credit() -> None:
    c = _subscribed("auto")
    frames = c.deliver(1, _msg("m1", b"one", headers={"k": "v"}), _msg("m2", redelivery_count=1))
    assert [f.command for f in frames] == ["MESSAGE", "MESSAGE"]
    first = frames[0].headers
    assert first["subscription"] == "s1"
    assert first["message-id"] == "m1"
    assert first["destination"] == "/queue/q"
    assert first["redelivered"] == "false" and first["k"] == "v"
    assert "ack" not in first
    assert frames[0].body == b"one"
    assert frames[1].headers["redelivered"] == "true"
    assert c.of(s.Ack) == [s.Ack(1, [1, 2])]
    assert c.of(s.Credit) == [s.Credit(1, 2)]


def test_client_individual_acks_one_and_nack_redelivers() -> None:
    c = _subscribed("client-individual")
    frames = c.deliver(1, _msg("m1"), _msg("m2"), _msg("m3"))
    acks = [f.headers["ack"] for f in frames]
    assert len(set(acks)) == 3
    assert not c.of(s.Ack)
    c.frame("ACK", [("id", acks[1])])
    assert c.of(s.Ack) == [s.Ack(1, [2])]
    assert c.of(s.Credit) == [s.Credit(1, 1)]
    c.frame("NACK", [("id", acks[0]), ("receipt", "n")])
    assert c.of(s.Nack) == [s.Nack(1, [1])]
    # Acked once is acked: a second ACK of the same delivery is a violation.
    _closed_with_error(c, c.frame("ACK", [("id", acks[1])]), "no unacknowledged message")


def test_client_mode_acks_cumulatively() -> None:
    c = _subscribed("client")
    frames = c.deliver(1, _msg("m1"), _msg("m2"), _msg("m3"), _msg("m4"))
    c.frame("ACK", [("id", frames[2].headers["ack"])])
    assert c.of(s.Ack) == [s.Ack(1, [1, 2, 3])]
    assert c.of(s.Credit) == [s.Credit(1, 3)]
    c.frame("ACK", [("id", frames[3].headers["ack"])])
    assert c.of(s.Ack) == [s.Ack(1, [4])]


def test_10_and_11_ack_by_message_id() -> None:
    for version in ("1.0", "1.1"):
        c = _subscribed("client-individual", version)
        frames = c.deliver(1, _msg("m1"), _msg("m2"))
        assert "ack" not in frames[0].headers
        c.frame("ACK", [("message-id", "m2"), ("subscription", "s1")])
        assert c.of(s.Ack) == [s.Ack(1, [2])]
    c = _subscribed("client-individual", "1.1")
    c.deliver(1, _msg("m1"))
    _closed_with_error(c, c.frame("ACK", [("message-id", "m1")]), "no subscription header")
    c = _subscribed("client-individual", "1.0")
    c.deliver(1, _msg("m1"))
    _closed_with_error(c, c.frame("NACK", [("message-id", "m1")]), "NACK is not part of STOMP 1.0")


def test_unknown_acks() -> None:
    c = _subscribed("client")
    c.deliver(1, _msg("m1"))
    _closed_with_error(c, c.frame("ACK", []), "no id header")
    c = _subscribed("client")
    _closed_with_error(c, c.frame("ACK", [("id", "9-9")]), "no unacknowledged message")
    c = _subscribed("client")
    _closed_with_error(c, c.frame("ACK", [("id", "garbage")]), "no unacknowledged message")


def test_unsubscribe_and_lost_end_subscriptions() -> None:
    c = _subscribed("client")
    c.frame("UNSUBSCRIBE", [("id", "s1")])
    assert c.of(s.Unsubscribe) == [s.Unsubscribe(1)]
    assert c.deliver(1, _msg("late")) == []  # the core took it back already
    c = _subscribed("client")
    c.frame("SUBSCRIBE", [("id", "s2"), ("destination", "other")])
    assert c.session.lost() == [s.Unsubscribe(1), s.Unsubscribe(2)]


def test_escaped_headers_round_trip_through_a_message() -> None:
    c = Client()
    c.frame("SEND", [("destination", "q"), ("odd:name", "v\\al\nue:\r")], b"")
    (send,) = c.of(s.Send)
    assert isinstance(send, s.Send)
    assert dict(send.message.headers) == {"odd:name": "v\\al\nue:\r"}
    c.frame("SUBSCRIBE", [("id", "s"), ("destination", "q")])
    frames = c.deliver(1, send.message)
    assert frames[0].headers["odd:name"] == "v\\al\nue:\r"


# -- transactions ----------------------------------------------------------------------


def test_transaction_commit_carries_sends_and_acks_together() -> None:
    c = _subscribed("client-individual")
    frames = c.deliver(1, _msg("m1"), _msg("m2"))
    c.frame("BEGIN", [("transaction", "t1")])
    c.frame("SEND", [("destination", "out"), ("transaction", "t1")], b"a")
    c.frame("ACK", [("id", frames[0].headers["ack"]), ("transaction", "t1")])
    c.frame("SEND", [("destination", "out"), ("transaction", "t1")], b"b")
    assert not c.of(s.Send) and not c.of(s.Ack)  # nothing happens before COMMIT
    assert c.frame("COMMIT", [("transaction", "t1"), ("receipt", "c1")]) == []
    (commit,) = c.of(s.Commit)
    assert isinstance(commit, s.Commit)
    assert [m.body for m in commit.messages] == [b"a", b"b"]
    assert commit.acks == [(1, [1])]
    frames = c.sent(commit.token)
    assert c.of(s.Credit) == [s.Credit(1, 1)]
    assert [f.headers for f in frames] == [{"receipt-id": "c1"}]
    assert c.session.transactions == {}


def test_abort_changes_nothing_and_the_delivery_can_be_acked_again() -> None:
    c = _subscribed("client-individual")
    frames = c.deliver(1, _msg("m1"))
    ack = frames[0].headers["ack"]
    c.frame("BEGIN", [("transaction", "t1")])
    c.frame("SEND", [("destination", "out"), ("transaction", "t1")], b"a")
    c.frame("ACK", [("id", ack), ("transaction", "t1")])
    c.frame("ABORT", [("transaction", "t1"), ("receipt", "a")])
    assert not c.of(s.Commit) and not c.of(s.Ack) and not c.of(s.Send)
    c.frame("ACK", [("id", ack)])
    assert c.of(s.Ack) == [s.Ack(1, [1])]


def test_nack_in_a_transaction_follows_the_commit() -> None:
    c = _subscribed("client-individual")
    frames = c.deliver(1, _msg("m1"))
    c.frame("BEGIN", [("transaction", "t")])
    c.frame("NACK", [("id", frames[0].headers["ack"]), ("transaction", "t")])
    c.frame("COMMIT", [("transaction", "t")])
    (commit,) = c.of(s.Commit)
    assert isinstance(commit, s.Commit)
    assert commit.acks == [] and commit.messages == []
    c.sent(commit.token)
    assert c.of(s.Nack) == [s.Nack(1, [1])]


def test_a_delivery_acked_outside_the_transaction_is_not_acked_twice() -> None:
    c = _subscribed("client-individual")
    frames = c.deliver(1, _msg("m1"))
    ack = frames[0].headers["ack"]
    c.frame("BEGIN", [("transaction", "t")])
    c.frame("ACK", [("id", ack), ("transaction", "t")])
    c.frame("ACK", [("id", ack)])
    c.frame("COMMIT", [("transaction", "t")])
    (commit,) = c.of(s.Commit)
    assert isinstance(commit, s.Commit)
    assert commit.acks == []


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([("BEGIN", [])], "BEGIN frame has no transaction"),
        ([("BEGIN", [("transaction", "t")]), ("BEGIN", [("transaction", "t")])], "already open"),
        ([("COMMIT", [("transaction", "t")])], "no open transaction 't'"),
        ([("ABORT", [("transaction", "t")])], "no open transaction 't'"),
        ([("COMMIT", [])], "COMMIT frame has no transaction"),
    ],
)
def test_bad_transactions(frames: list[tuple[str, list[tuple[str, str]]]], error: str) -> None:
    c = Client()
    out: list[Frame] = []
    for command, headers in frames:
        out = c.frame(command, headers)
    _closed_with_error(c, out, error)


def test_a_failed_commit_is_an_error() -> None:
    c = Client()
    c.frame("BEGIN", [("transaction", "t")])
    c.frame("SEND", [("destination", "q"), ("transaction", "t")], b"x")
    c.frame("COMMIT", [("transaction", "t"), ("receipt", "c")])
    (commit,) = c.of(s.Commit)
    assert isinstance(commit, s.Commit)
    err = _closed_with_error(c, c.sent(commit.token, "store failed"), "store failed")
    assert err.headers["receipt-id"] == "c"


def test_transactions_are_bounded() -> None:
    c = Client()
    for n in range(s.MAX_TRANSACTIONS):
        c.frame("BEGIN", [("transaction", f"t{n}")])
    _closed_with_error(c, c.frame("BEGIN", [("transaction", "one more")]), "open transactions")


def test_lost_connection_drops_open_transactions() -> None:
    c = Client()
    c.frame("BEGIN", [("transaction", "t")])
    c.frame("SEND", [("destination", "q"), ("transaction", "t")], b"x")
    c.session.lost()
    assert c.session.transactions == {}
    assert not c.of(s.Commit)


# -- disconnect and shutdown -------------------------------------------------------------


def test_disconnect_receipt_waits_for_earlier_sends() -> None:
    c = Client()
    c.frame("SEND", [("destination", "q")], b"x")
    (send,) = c.of(s.Send)
    assert isinstance(send, s.Send)
    assert c.frame("DISCONNECT", [("receipt", "bye")]) == []
    assert not c.of(s.Close)
    frames = c.sent(send.token)
    assert [f.headers for f in frames] == [{"receipt-id": "bye"}]
    assert c.of(s.Close)


def test_disconnect_without_receipt_closes_at_once() -> None:
    c = Client()
    c.frame("DISCONNECT", [])
    assert c.of(s.Close) and c.session.closed


def test_shutdown_is_an_error_then_close() -> None:
    c = _subscribed("auto")
    frames = c._out(c.session.shutdown("broker a is not the master", c.now))
    _closed_with_error(c, frames, "not the master")


def test_10_output_is_not_escaped() -> None:
    c = _subscribed("auto", "1.0")
    raw = c.session.deliver(1, [(1, Entry(_msg("m", headers={"k": "a:b"}), 1, 1))], c.now)
    data = b"".join(a.data for a in raw if isinstance(a, s.Write))
    assert b"k:a:b\n" in data
    assert c.session.parser.escaping == Escaping.NONE


# -- topics ------------------------------------------------------------------------------


def test_send_to_a_topic_publishes() -> None:
    c = Client()
    c.frame("SEND", [("destination", "/topic/orders.eu"), ("persistent", "true")], b"x")
    (send,) = c.of(s.Send)
    assert isinstance(send, s.Send)
    assert (send.message.destination, send.message.topic) == ("orders.eu", True)


def test_topic_subscription_and_the_published_topic_on_each_message() -> None:
    c = Client()
    c.frame("SUBSCRIBE", [("id", "t"), ("destination", "/topic/orders.>")])
    assert c.of(s.Subscribe) == [s.Subscribe(1, "orders.>", s.DEFAULT_PREFETCH, topic=True)]
    frames = c.deliver(1, Message(id="m1", destination="orders.eu.fr", topic=True, body=b"a"))
    assert frames[0].headers["destination"] == "/topic/orders.eu.fr"
    assert frames[0].headers["subscription"] == "t"


def test_durable_topic_subscriptions_need_a_client_id() -> None:
    c = Client("")
    c.send(b"CONNECT\naccept-version:1.2\nclient-id:app-1\n\n\0")
    c.parser.escaping = Escaping.V12
    c.frame(
        "SUBSCRIBE",
        [("id", "d"), ("destination", "/topic/news"), ("activemq.subscriptionName", "mine")],
    )
    (sub,) = c.of(s.Subscribe)
    assert sub == s.Subscribe(1, "news", s.DEFAULT_PREFETCH, topic=True, durable=("app-1", "mine"))
    # Leaving keeps it; UNSUBSCRIBE naming it removes it.
    c.frame("UNSUBSCRIBE", [("id", "d"), ("activemq.subscriptionName", "mine")])
    assert c.of(s.Unsubscribe) == [s.Unsubscribe(1, ("app-1", "mine"))]
    c = Client()
    frames = c.frame(
        "SUBSCRIBE",
        [("id", "d"), ("destination", "/topic/news"), ("activemq.subscriptionName", "mine")],
    )
    _closed_with_error(c, frames, "needs a client id")


def test_unsubscribe_naming_another_durable_subscription() -> None:
    c = Client()
    c.frame("SUBSCRIBE", [("id", "t"), ("destination", "/topic/x")])
    frames = c.frame("UNSUBSCRIBE", [("id", "t"), ("activemq.subscriptionName", "other")])
    _closed_with_error(c, frames, "is not the durable subscription 'other'")


def test_topics_can_be_off() -> None:
    c = Client(topics=False)
    frames = c.frame("SEND", [("destination", "/topic/news")], b"x")
    _closed_with_error(c, frames, "topics are not available here")
