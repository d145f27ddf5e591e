"""Encryption between nodes: a cluster CA every node derives from the cluster secret.

Whoever holds the cluster secret can already do everything a node can, so the
secret is also the root of the cluster's TLS: HKDF-SHA256 over it gives a
P-256 key, and a self-signed CA certificate with a fixed subject, serial,
validity and key id (signed with deterministic ECDSA, RFC 6979) makes every
node build the very same trust anchor, byte for byte, with nothing to
distribute. At start each node makes a fresh key and a leaf certificate that
CA signs (common name: the node id; DNS name: `CLUSTER_SERVER_NAME`); the
leaf's key never leaves the process.

The Raft transport and the data plane wrap every connection in mutual TLS
against that CA (`mutual_server_context`, `mutual_client_context`), under
their own HMAC handshake, which stays. The peer HTTP API shares the client
port: its listener serves the cluster leaf to a client that asks for
`CLUSTER_SERVER_NAME` by SNI (`peer_api_context`, see `node/tls.py`), and peers
verify it against the CA (`peer_http_context`). `peer_url` is the one place a
peer's HTTP address becomes a URL.
"""

from __future__ import annotations

import datetime
import functools
import os
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The server name a peer asks for by SNI to get the cluster leaf, not the operator's cert.
CLUSTER_SERVER_NAME = "cluster.flotilla.internal"
# The request extension that makes httpx send that name (and check the leaf against it).
PEER_EXTENSIONS = {"sni_hostname": CLUSTER_SERVER_NAME}
_CA_INFO = b"flotilla cluster ca v1"
_CA_NAME = x509.Name([
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Flotilla"),
    x509.NameAttribute(NameOID.COMMON_NAME, "Flotilla cluster CA"),
])
_CA_SERIAL = 1
# Fixed, so the certificate is the same on every node and on every start.
_CA_NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_CA_NOT_AFTER = datetime.datetime(2126, 1, 1, tzinfo=datetime.UTC)
# A leaf lives as long as its process; a node running longer than this restarts first.
_LEAF_DAYS = 3650
# P-256's group order: the derived scalar is reduced into [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class ClusterCA:
    """The cluster's trust anchor and the key that signs node leaves."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@functools.lru_cache(maxsize=8)
def cluster_ca(secret: bytes) -> ClusterCA:
    """The CA `secret` derives: the same on every node that holds it, different for
    any other secret."""
    # 48 bytes for a 256-bit order: the reduction's bias is below 2**-128.
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=_CA_INFO).derive(secret)
    scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_CA_NAME)
        .issuer_name(_CA_NAME)
        .public_key(public)
        .serial_number(_CA_SERIAL)
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return ClusterCA(key, certificate)


@dataclass(frozen=True)
class NodeLeaf:
    """This node's certificate for the cluster, and its key (made fresh at start)."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate


def issue_leaf(ca: ClusterCA, node_id: str) -> NodeLeaf:
    """A fresh key and a certificate for it, signed by the cluster CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Flotilla"),
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
        ]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # clocks a little apart
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CLUSTER_SERVER_NAME)]),
                       critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return NodeLeaf(key, certificate)


def _load_leaf(context: ssl.SSLContext, leaf: NodeLeaf) -> None:
    """Put the leaf and its key into `context` without writing the key to disk:
    `load_cert_chain` reads only files, so it reads an anonymous memory file."""
    pem = leaf.certificate.public_bytes(serialization.Encoding.PEM) + leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.memfd_create("flotilla-cluster-leaf", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _context(purpose: int) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class ClusterTLS:
    """The TLS contexts of one node's traffic with its peers."""

    ca: ClusterCA
    leaf: NodeLeaf

    def mutual_server_context(self) -> ssl.SSLContext:
        """For a listener of the Raft transport or the data plane: our leaf, and a peer's
        leaf required."""
        context = _context(ssl.PROTOCOL_TLS_SERVER)
        _load_leaf(context, self.leaf)
        context.load_verify_locations(cadata=self.ca.pem)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def mutual_client_context(self) -> ssl.SSLContext:
        """For dialling a peer's Raft transport or data plane. Any leaf of the CA will do:
        which node it is, the HMAC handshake inside says."""
        context = _context(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        _load_leaf(context, self.leaf)
        context.load_verify_locations(cadata=self.ca.pem)
        return context

    def peer_api_context(self) -> ssl.SSLContext:
        """What the client port switches to for a client asking for `CLUSTER_SERVER_NAME`."""
        context = _context(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["http/1.1"])
        _load_leaf(context, self.leaf)
        return context


def cluster_tls(secret: bytes, node_id: str) -> ClusterTLS:
    """This node's cluster TLS: the CA derived from `secret` and a fresh leaf."""
    ca = cluster_ca(secret)
    return ClusterTLS(ca, issue_leaf(ca, node_id))


@functools.lru_cache(maxsize=8)
def peer_http_context(secret: bytes) -> ssl.SSLContext:
    """For HTTPS to a peer's API (peers, `--join`, the admin CLI): the leaf must come
    from the CA `secret` derives and name `CLUSTER_SERVER_NAME`."""
    context = ssl.create_default_context(cadata=cluster_ca(secret).pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def peer_url(http: str, path: str, *, tls: bool) -> str:
    """The URL of `path` on the peer whose HTTP address is `http` (HOST:PORT)."""
    return f"{'https' if tls else 'http'}://{http}{path}"
