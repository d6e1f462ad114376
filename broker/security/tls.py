"""A broker's TLS material (certificate chain, private key, CA) read from files, and the
names a peer's certificate gives it.

Keys are read from files only (their paths may be on a command line, never their
content) and refused when group or others may read them. The gRPC and asyncio
credentials are made from this by the layers that listen and dial (broker/server/tls.py,
the STOMP transport, the client).
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAX_PEM_BYTES = 1024 * 1024


class TlsError(ValueError):
    pass


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes: this broker's certificate chain and key, and the CA its peers' and
    clients' certificates are checked against."""

    cert: bytes
    key: bytes = field(repr=False)
    ca: bytes
    cert_file: Path
    key_file: Path
    ca_file: Path


def _read(path: Path, what: str, private: bool) -> bytes:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"{path}: cannot read the TLS {what}: {exc.strerror or exc}") from None
    if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsError(
            f"{path}: the TLS key may be read by others (mode {stat.S_IMODE(mode):04o}); "
            "chmod 600 it"
        )
    if len(data) > MAX_PEM_BYTES or b"-----BEGIN " not in data:
        raise TlsError(f"{path}: not a PEM {what}")
    return data


def load_material(cert: Path, key: Path, ca: Path) -> TlsMaterial:
    """Read the three files; TlsError names the file and what is wrong with it."""
    return TlsMaterial(
        _read(cert, "certificate", False),
        _read(key, "key", True),
        _read(ca, "CA certificate", False),
        cert,
        key,
        ca,
    )


def read_ca(path: Path) -> bytes:
    return _read(path, "CA certificate", False)


# gRPC's auth_context keys for the peer certificate's names (the subject CN and the SANs).
_NAME_KEYS = ("x509_common_name", "x509_subject_alternative_name")


def peer_names(auth_context: Mapping[str, Iterable[bytes]]) -> frozenset[str]:
    """The names a verified peer certificate gives (CN and SANs); empty without one."""
    names: set[str] = set()
    for key in _NAME_KEYS:
        for value in auth_context.get(key, ()):
            names.add(value.decode("utf-8", "replace"))
    return frozenset(names)


def certificate_refusal(
    names: frozenset[str], claimed: str, accepted: Iterable[str], what: str
) -> str | None:
    """Why a peer that says it is broker `claimed` and whose certificate gives `names` is
    refused as `what` ("a member of group B"), or None. Its certificate must name it (no
    broker passes for another); an empty `accepted` takes any broker the CA signed."""
    if not names:
        return f"{what} must present a broker certificate (mutual TLS)"
    shown = ", ".join(sorted(names)[:4])
    if claimed not in names:
        return f"broker {claimed!r} presented a certificate naming {shown}, not itself"
    wanted = frozenset(accepted)
    if wanted and claimed not in wanted:
        return f"broker {claimed!r} is not {what} (expected one of {', '.join(sorted(wanted))})"
    return None


def tls_failure(details: str) -> str | None:
    """A TLS cause in gRPC's words for a failed TLS connection, said plainly; None when
    the failure is not about TLS."""
    text = details.lower()
    if text.rstrip().endswith("socket closed"):
        return (
            "TLS: the peer closed the connection during the handshake (it refused this "
            "side's certificate, or its port is not TLS)"
        )
    if "handshake" in text or "ssl" in text or "certificate" in text:
        return (
            "TLS handshake failed: the broker's certificate is not signed by the CA given "
            "(or the broker refused this side's certificate)"
        )
    return None


PLAINTEXT_HINT = "connection closed during setup: is the port TLS? (use ssl://HOST:PORT and a CA)"


def server_ssl_context(tls: TlsMaterial) -> ssl.SSLContext:
    """A TLS server context for the asyncio listeners (STOMP): this broker's certificate;
    clients are not asked for one (they authenticate with users)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{tls.cert_file}: cannot load the certificate and key: {exc}") from None
    return context
