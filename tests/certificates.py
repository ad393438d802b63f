"""Self-signed certificates for tests that serve or refuse HTTPS, unit and integration alike.

One builder, so the tests differ only in what matters to them: the names a certificate is for
and whether it may stand as its own CA. Importable as ``certificates``: pytest puts ``tests/``
on ``sys.path`` for its conftest.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def subject_alternative_name(host: str) -> x509.GeneralName:
    """An IP address as an IP address name (clients match an IP host only to those), anything
    else as a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def self_signed_certificate(
    folder: Path, hosts: Sequence[str], *, ca: bool = False
) -> tuple[Path, Path]:
    """Write a certificate for ``hosts`` (its subject alternative names, the first also its
    common name), valid from a day ago to a day ahead, and its unencrypted PKCS#8 key to
    ``folder``/cert.pem and ``folder``/key.pem; return their paths.

    ``ca`` marks it a CA (BasicConstraints, critical), for clients that take the file itself as
    the authority they trust (SSL_CERT_FILE) rather than refuse it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    cert = builder.add_extension(
        x509.SubjectAlternativeName([subject_alternative_name(host) for host in hosts]),
        critical=False,
    ).sign(key, hashes.SHA256())
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
