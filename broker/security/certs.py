"""A development certificate authority and per-broker certificates (`netbroker certs`).

Each broker's certificate names the broker (CN and a DNS SAN) and the addresses it is
reached at (SANs), so that clients verify the host they dial and brokers tell each other
apart by certificate (the bridge and replication checks read the SANs). Keys are written
0600; the CA's key stays in the directory so that brokers added later can be signed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
# A development CA: long enough not to expire under a test cluster, short enough that a
# forgotten one does not live for ever.
VALID_DAYS = 825


@dataclass(frozen=True)
class BrokerCert:
    """Where one broker's certificate and key are, in a certs directory."""

    cert: Path
    key: Path


def broker_files(directory: Path, name: str) -> BrokerCert:
    return BrokerCert(directory / f"{name}.pem", directory / f"{name}.key")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / CA_KEY}: not an EC key written by `netbroker certs`")
    return cert, key


def ensure_ca(directory: Path, name: str = "netbroker development CA") -> bool:
    """Create the CA in `directory` unless it is there; whether it was created."""
    if (directory / CA_CERT).exists() and (directory / CA_KEY).exists():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _pem_key(key), 0o600)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for n in names:
        if not n or n in seen:
            continue
        seen.add(n)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def issue(directory: Path, name: str, hosts: Iterable[str] = ()) -> BrokerCert:
    """Sign a certificate for broker `name` (CN and DNS SAN `name`, SANs for `hosts`,
    127.0.0.1 and localhost) with the CA in `directory`; its key is written 0600."""
    ca_cert, ca_key = _load_ca(directory)
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    names = [name, *hosts, "127.0.0.1", "localhost"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # A broker is a server to clients and a client to the brokers it bridges to or
        # replicates from: one certificate serves both ends.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = broker_files(directory, name)
    _write(files.key, _pem_key(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def ensure_brokers(directory: Path, brokers: Iterable[tuple[str, Iterable[str]]]) -> list[str]:
    """The CA and a certificate for each (name, hosts) that has none; the names issued."""
    ensure_ca(directory)
    issued = []
    for name, hosts in brokers:
        files = broker_files(directory, name)
        if files.cert.exists() and files.key.exists():
            continue
        issue(directory, name, hosts)
        issued.append(name)
    return issued
