"""What a broker advertises over zeroconf, and how it reads other brokers' records.

A serving broker registers one DNS-SD service of type `_netbroker._tcp.local.` per
discovery group it takes part in. The service's SRV and A/AAAA records say where its
client port is (bridges use the client port); its TXT record says who it is:

    txtvers=1  broker=a  group=A  role=standalone  dgroup=default  proto=1
    token=9f86d081884c7d65   (only with a discovery token)
    inc=3fa2c1d0             (new on every advertisement)

`inc` changes whenever a broker advertises again (restart, promotion): zeroconf then
reports the record as updated even where a crashed predecessor's record with the same
name is still cached, so peers learn that this is the newer incarnation.

Everything here is pure.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SERVICE_TYPE = "_netbroker._tcp.local."
TXT_VERSION = "1"
# Roles that serve clients and bridges; slaves do not advertise at all.
SERVING_ROLES = ("standalone", "master")
# DNS labels are at most 63 bytes; the instance name is one label.
_MAX_LABEL = 63
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")
_HEX_RE = re.compile(r"[0-9a-f]{1,64}")


class BadRecord(ValueError):
    """A `_netbroker._tcp` record this version cannot read; the text says why."""


def token_digest(token: str) -> str:
    """What goes into the TXT record for a discovery token ("" for none).

    A digest rather than the token, so that everyone on the network segment does not
    learn it. It only tells clusters apart; links still authenticate with securityToken.
    """
    if not token:
        return ""
    return hashlib.sha256(b"netbroker-discovery\0" + token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Advert:
    """One broker's record in one discovery group, as its TXT record carries it."""

    broker: str
    group: str
    role: str
    discovery_group: str
    protocol: int
    token_digest: str = ""
    incarnation: str = ""

    def txt(self) -> dict[str, str]:
        out = {
            "txtvers": TXT_VERSION,
            "broker": self.broker,
            "group": self.group,
            "role": self.role,
            "dgroup": self.discovery_group,
            "proto": str(self.protocol),
            "inc": self.incarnation,
        }
        if self.token_digest:
            out["token"] = self.token_digest
        return out

    @classmethod
    def from_txt(
        cls, properties: Mapping[str, str | None] | Mapping[bytes, bytes | None]
    ) -> Advert:
        """Read a TXT record (as zeroconf decodes it); raise BadRecord if it is not ours."""
        txt: dict[str, str] = {}
        for key, value in properties.items():
            k = key.decode(errors="replace") if isinstance(key, bytes) else key
            v = value.decode(errors="replace") if isinstance(value, bytes) else value
            txt[k] = v or ""
        version = txt.get("txtvers", "")
        if version != TXT_VERSION:
            raise BadRecord(f"TXT version {version!r}, this broker reads {TXT_VERSION!r}")
        for key in ("broker", "role", "dgroup", "proto"):
            if not txt.get(key):
                raise BadRecord(f"TXT record without {key!r}")
        try:
            protocol = int(txt["proto"])
        except ValueError:
            raise BadRecord(f"bad protocol {txt['proto']!r}") from None
        digest = txt.get("token", "")
        if digest and not _HEX_RE.fullmatch(digest):
            raise BadRecord(f"bad token digest {digest!r}")
        return cls(
            broker=txt["broker"],
            group=txt.get("group", ""),
            role=txt["role"],
            discovery_group=txt["dgroup"],
            protocol=protocol,
            token_digest=digest,
            incarnation=txt.get("inc", ""),
        )

    @property
    def instance_name(self) -> str:
        """The full service instance name, e.g. `a@default._netbroker._tcp.local.`.

        Stable across restarts, so that a broker coming back replaces its own stale
        record in peers' caches instead of appearing beside it. Readable where it fits
        one DNS label without dots; otherwise shortened with a digest.
        """
        label = f"{self.broker}@{self.discovery_group}"
        if self.token_digest:
            # Two clusters on one segment may both name a broker "a".
            label += f"~{self.token_digest[:6]}"
        if "." in label or len(label.encode()) > _MAX_LABEL:
            digest = hashlib.sha256(label.encode()).hexdigest()[:12]
            label = f"{self.broker[:40]}@{digest}"
        return f"{label}.{SERVICE_TYPE}"


def check_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    """The discovery interfaces as IP addresses; raise ValueError naming a bad one.

    Zeroconf is always given an explicit list: with none it would send on every
    interface of the host.
    """
    if not interfaces:
        raise ValueError("no discovery interface given (e.g. 127.0.0.1)")
    out = []
    for text in interfaces:
        try:
            out.append(str(ipaddress.ip_address(text.strip())))
        except ValueError:
            raise ValueError(
                f"discovery interface {text!r} is not an IP address (give the address of "
                f"the interface, e.g. 127.0.0.1 or 10.0.0.5)"
            ) from None
    return tuple(dict.fromkeys(out))


def advertised_hosts(host: str, interfaces: Sequence[str]) -> tuple[str, ...]:
    """The addresses to advertise for a broker listening on `host`.

    A broker listening on every address (0.0.0.0, ::) is reached at its discovery
    interfaces' addresses; one listening on a specific address, at that address. A
    loopback listener seen from a non-loopback interface would send peers to their own
    loopback, to whatever broker listens there: that is refused (ValueError says why).
    """
    checked = check_interfaces(interfaces)
    if host in _WILDCARDS:
        return checked
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"cannot advertise host name {host!r}: listen on an IP address (or 0.0.0.0 to "
            f"advertise the discovery interfaces' addresses)"
        ) from None
    if ip.is_loopback:
        remote = [i for i in checked if not ipaddress.ip_address(i).is_loopback]
        if remote:
            raise ValueError(
                f"the broker listens on {host}, which peers reached through discovery "
                f"interface {remote[0]} cannot use; listen on 0.0.0.0 or on {remote[0]}"
            )
    return (str(ip),)


def format_address(host: str, port: int) -> str:
    """`host:port` as gRPC takes it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
