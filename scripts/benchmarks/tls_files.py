"""A private CA and a server certificate for 127.0.0.1, for benchmarks run over TLS.

`scripts/bench cluster --tls` gives the Flotilla nodes and Distribution the
same certificate, and its clients trust the CA, so both systems pay for the
same TLS. Made with `cryptography` (a dependency of the node), not a test tool.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class BenchTLS:
    """PEM files of a certificate for 127.0.0.1, its key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path

    def context(self) -> ssl.SSLContext:
        """A client context trusting the CA only."""
        return ssl.create_default_context(cafile=str(self.ca))

    @property
    def flotilla_flags(self) -> list[str]:
        """`flotilla serve` flags: client TLS, and with it (auto) TLS between nodes."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_bench_tls(folder: Path) -> BenchTLS:
    """Write a fresh CA and a P-256 certificate for 127.0.0.1 into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        ), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = BenchTLS(folder / "server.crt", folder / "server.key", folder / "ca.crt")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    files.key.chmod(0o600)
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files
