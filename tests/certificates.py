"""Certificates for nodes under test: a trustme CA and PEM files a node is given.

A node reads its certificate and key from files (`--tls-cert`, `--tls-key`),
so tests write them as an operator would, and clients trust the CA through
an `ssl.SSLContext` (httpx) or the CA's PEM file (docker, podman, skopeo).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class NodeCertificate:
    """One certificate for 127.0.0.1, its key, and the CA that issued it, as files."""

    ca: trustme.CA
    cert: Path
    key: Path
    ca_file: Path

    @property
    def args(self) -> list[str]:
        """`flotilla serve` flags that make a node serve this certificate."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def trusting_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate's CA only."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def issue_certificate(folder: Path, ca: trustme.CA | None = None,
                      name: str = "node") -> NodeCertificate:
    """A certificate for 127.0.0.1 (and localhost), written into `folder` as
    NAME.crt, NAME.key and NAME-ca.crt."""
    ca = ca or trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, ca_file = (folder / f"{name}.crt", folder / f"{name}.key",
                          folder / f"{name}-ca.crt")
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    key.chmod(0o600)
    ca_file.write_bytes(ca.cert_pem.bytes())
    return NodeCertificate(ca, cert, key, ca_file)
