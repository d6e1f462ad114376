"""The security deciders: users file parsing, the authorization map, the failure limiter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.security.authorization import Operation, parse_authorization
from broker.security.errors import SecurityError
from broker.security.limiter import FailureLimiter
from broker.security.secrets import SecretFileError, read_secret
from broker.security.settings import load_settings, parse_settings
from broker.security.users import parse_users

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
R, W, A = Operation.READ, Operation.WRITE, Operation.ADMIN


def refusal(raw: object) -> str:
    with pytest.raises(SecurityError) as info:
        parse_settings(raw, Path("."), "users.yaml")
    return str(info.value)


def test_users_parsed() -> None:
    users = parse_users([{"name": "alice", "hash": HASH, "groups": ["a", "b"]}])
    assert users[0].name == "alice" and users[0].groups == {"a", "b"}
    assert HASH not in repr(users[0])  # hashes stay out of logs


def test_users_groups_as_a_comma_string() -> None:
    assert parse_users([{"name": "a", "hash": HASH, "groups": "x, y"}])[0].groups == {"x", "y"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"users": [{"name": "a", "password": "secret"}]},
            "users.yaml: users.0.password: plaintext passwords are refused",
        ),
        (
            {"users": [{"name": "a", "hash": "secret"}]},
            "users.yaml: users.0.hash: not an argon2 hash: plaintext passwords are refused",
        ),
        ({"users": [{"name": "a"}]}, "users.yaml: users.0.hash: missing"),
        ({"users": [{"name": "a:b", "hash": HASH}]}, "users.yaml: users.0.name: expected"),
        (
            {"users": [{"name": "a", "hash": HASH}, {"name": "a", "hash": HASH}]},
            "users.yaml: users.1.name: user 'a' is listed twice",
        ),
        ({"users": [{"name": "a", "hash": HASH, "groups": [1]}]}, "users.0.groups.0: invalid"),
        ({"users": "nope.yaml"}, "nope.yaml: cannot read"),
        ({"user": []}, "users.yaml: user: unknown key"),
        ({"anonymous": "yes"}, "users.yaml: anonymous: expected true or false"),
        ({"authorization": [{"queue": "a*", "read": ["x"]}]}, "authorization.0.queue: "),
        ({"authorization": [{"read": ["x"]}]}, "authorization.0: give exactly one of"),
        ({"authorization": [{"queue": ">", "raed": ["x"]}]}, "authorization.0.raed: unknown"),
    ],
)
def test_bad_users_files_refused(raw: object, expected: str) -> None:
    assert expected in refusal(raw)


def test_plaintext_never_echoed() -> None:
    assert "hunter2" not in refusal({"users": [{"name": "a", "hash": "hunter2"}]})


def test_users_from_another_file(tmp_path: Path) -> None:
    (tmp_path / "people.yaml").write_text(f"users:\n  - {{name: bob, hash: '{HASH}'}}\n")
    (tmp_path / "sec.yaml").write_text("users: people.yaml\nanonymous: true\n")
    settings = load_settings(tmp_path / "sec.yaml")
    assert [u.name for u in settings.users] == ["bob"] and settings.anonymous_allowed


def test_anonymous_by_permission() -> None:
    raw = {"authorization": [{"topic": ">", "read": ["anonymous"]}]}
    assert parse_settings(raw, Path(".")).anonymous_allowed
    assert not parse_settings({}, Path(".")).anonymous_allowed


def test_authorization_patterns_and_union() -> None:
    auth = parse_authorization(
        [
            {"queue": "orders.>", "read": ["consumers"], "write": "producers"},
            {"queue": "orders.eu.*", "write": ["eu"]},
            {"topic": ">", "read": ["everyone"]},
            {"queue": ">", "admin": ["admins"]},
        ]
    )
    consumers, producers, eu = frozenset({"consumers"}), frozenset({"producers"}), {"eu"}
    assert auth.allowed(consumers, R, False, "orders.eu")
    assert not auth.allowed(consumers, W, False, "orders.eu")
    assert auth.allowed(producers, W, False, "orders.eu.paris")
    assert auth.allowed(frozenset(eu), W, False, "orders.eu.paris")
    assert not auth.allowed(frozenset(eu), W, False, "orders.us.nyc")
    assert not auth.allowed(consumers, R, False, "orders")  # `>` needs a segment
    assert not auth.allowed(consumers, R, False, "billing")  # no entry: refused
    # Queues and topics are separate.
    assert not auth.allowed(consumers, R, True, "orders.eu")
    assert auth.allowed(frozenset({"everyone"}), R, True, "orders.eu")
    # A subscription pattern is matched as a name: `orders.>` covers `orders.>`.
    assert auth.allowed(consumers, R, False, "orders.>")
    assert not parse_authorization([{"queue": "orders.eu", "read": ["c"]}]).allowed(
        frozenset({"c"}), R, False, "orders.*"
    )
    assert auth.broker_admin(frozenset({"admins"})) and not auth.broker_admin(consumers)
    assert auth.mentions("eu") and not auth.mentions("anonymous")


def test_authorization_cache_is_bounded() -> None:
    auth = parse_authorization([{"queue": ">", "write": ["w"]}])
    for i in range(10_050):
        assert auth.allowed(frozenset({"w"}), W, False, f"q{i}")
    assert len(auth._cache) <= 10_000


def test_limiter_blocks_after_limit_then_forgets() -> None:
    limiter = FailureLimiter(limit=3, window=10.0)
    for t in (0.0, 1.0, 2.0):
        assert limiter.retry_after("p", t) == 0
        limiter.failed("p", t)
    assert limiter.retry_after("p", 3.0) == pytest.approx(7.0)
    assert limiter.retry_after("other", 3.0) == 0
    assert limiter.retry_after("p", 10.5) == 0  # the first failure left the window
    limiter.failed("p", 11.0)
    limiter.failed("p", 11.0)
    assert limiter.retry_after("p", 11.0) > 0
    limiter.succeeded("p")
    assert limiter.retry_after("p", 11.0) == 0


def test_limiter_memory_bounded() -> None:
    limiter = FailureLimiter(limit=2, window=10.0, max_peers=100)
    for i in range(1000):
        limiter.failed(f"p{i}", 0.0)
    assert limiter.peers == 100


def test_secret_files(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    os.chmod(path, 0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        read_secret(path)
    os.chmod(path, 0o600)
    assert read_secret(path) == "s3cret"
    with pytest.raises(SecretFileError, match="cannot read"):
        read_secret(tmp_path / "missing")


def _topology(raw: dict[str, object]) -> object:
    from broker.cluster.schema import validate
    from netconnector.uri import parse_connector

    return validate(raw, "t.yaml", parse_connector)


def test_topology_security_keys_reach_each_broker(tmp_path: Path) -> None:
    from broker.cluster.configs import write_configs
    from broker.cluster.model import Topology
    from broker.cluster.plan import plan

    users = [{"name": "alice", "hash": HASH, "groups": ["p"]}]
    topology = _topology(
        {
            "users": users,
            "authorization": [{"queue": ">", "write": ["p"]}],
            "brokerCredential": "cred",
            "groups": {
                "A": {"brokers": {"a": {"port": 61616}}},
                "B": {"brokers": {"b": {"port": 61617, "anonymous": True}}},
            },
        }
    )
    assert isinstance(topology, Topology)
    plans = plan(topology, cwd=tmp_path, configs=True)
    write_configs(plans, tmp_path)
    for p in plans:
        assert p.config is not None and p.config.users_file is not None
        assert p.config.broker_credential_file == tmp_path / "cred"  # relative to up's cwd
        assert (p.config.users_file.stat().st_mode & 0o077) == 0
        settings = load_settings(p.config.users_file)
        assert [u.name for u in settings.users] == ["alice"]
        assert settings.anonymous is (p.name == "b")  # the broker's own key over the file's


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"users": [{"name": "a", "hash": "pw"}]}, "t.yaml: users[0].hash: not an argon2 hash"),
        ({"anonymous": "yes"}, "t.yaml: anonymous: expected true or false"),
        ({"authorization": [{"queue": "a.>.b"}]}, "t.yaml: authorization[0].queue: destination"),
    ],
)
def test_topology_security_keys_refused(raw: dict[str, object], expected: str) -> None:
    from broker.cluster.errors import TopologyError

    with pytest.raises(TopologyError) as info:
        _topology({**raw, "groups": {"A": {"brokers": {"a": {"port": 61616}}}}})
    assert expected in str(info.value)


def test_guesses_lock_out_only_that_user_and_missing_credentials_count_for_nothing() -> None:
    import asyncio

    from broker.security.authenticator import AuthenticationError, Authenticator
    from broker.security.passwords import hash_password

    secret = {"alice": "alice-pw", "bob": "bob-pw"}
    users = [{"name": n, "hash": hash_password(p), "groups": ["g"]} for n, p in secret.items()]
    raw = {"users": users}
    auth = Authenticator(parse_settings(raw, Path(".")), FailureLimiter(limit=3), clock=lambda: 0.0)

    async def attempt(user: str | None, password: str | None) -> str:
        try:
            return (await auth.authenticate(user, password, "10.0.0.9")).name
        except AuthenticationError as exc:
            return exc.message

    async def scenario() -> None:
        for _ in range(10):  # a probe without credentials, many times
            assert "requires a user and password" in await attempt(None, None)
        assert await attempt("bob", "bob-pw") == "bob"
        for _ in range(3):
            assert await attempt("alice", "guess") == "authentication failed"
        assert "too many failures" in await attempt("alice", "alice-pw")
        auth._verified.clear()  # bob logs in afresh from the same host: not locked out
        assert await attempt("bob", "bob-pw") == "bob"

    asyncio.run(scenario())


def test_tls_brokers_take_bridges_and_followers_only_from_the_topology(tmp_path: Path) -> None:
    from broker.cluster.model import Topology
    from broker.cluster.plan import plan

    topology = _topology(
        {
            "zookeeper": "127.0.0.1:2181",
            "tls": {"certs": "certs"},
            "groups": {
                "A": {"brokers": {"a": {"port": 61616, "bridge_port": 61626}}},
                "B": {
                    "election": "zookeeper",
                    "brokers": {
                        "b": {"port": 61617, "bridge_port": 61627, "replication_port": 61637},
                        "c": {"port": 61618, "bridge_port": 61628, "replication_port": 61638},
                    },
                },
            },
        }
    )
    assert isinstance(topology, Topology)
    for p in plan(topology, cwd=tmp_path, configs=True, zookeeper="127.0.0.1:2181"):
        assert p.config is not None
        assert p.config.tls_peers == ("a", "b", "c")
        assert p.config.group_members == (("a",) if p.name == "a" else ("b", "c"))
        assert p.config.tls_ca == tmp_path / "certs" / "ca.pem"  # where up runs
