"""TLS on the client port: the operator's certificate, reloaded on SIGHUP, and the
cluster's certificate for peers that ask for it by name.

Hypercorn wraps every accepted connection in the one `ssl.SSLContext` it was
given, once, at start; a certificate loaded into it could never change. So the
context Hypercorn holds (`ServerTLS.listener`) carries no certificate: its
`sni_callback`, which OpenSSL calls during every handshake whether the client
sent a name or not, moves the connection to the context that should answer
it, the operator's current one, or the cluster leaf's (`node/cluster/
cluster_tls.py`) for a peer asking for `CLUSTER_SERVER_NAME`. `reload` builds
a whole new operator context from the files and swaps it in only once it
loaded: new connections get the new certificate, connections already open go
on with theirs, and a bad pair leaves the old one serving.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from node.cluster.cluster_tls import CLUSTER_SERVER_NAME
from node.config import ConfigError

log = logging.getLogger(__name__)

ALPN = ["http/1.1"]  # the client API speaks HTTP/1.1 over TLS


def operator_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context holding the PEM certificate (chain) and key; ConfigError when
    they cannot be read or do not belong together."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        # The message names the files and OpenSSL's reason, never the key's bytes.
        raise ConfigError(f"tls_cert {cert} / tls_key {key}: {_reason(exc)}") from None
    return context


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class ServerTLS:
    """The client port's contexts: the one Hypercorn holds, and the ones it hands out."""

    def __init__(self, cert: Path, key: Path, internal: ssl.SSLContext | None = None) -> None:
        self.cert, self.key = cert, key
        self.internal = internal
        self.current = operator_context(cert, key)
        self.reloads = 0  # certificates swapped in by `reload`
        listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        listener.minimum_version = ssl.TLSVersion.TLSv1_2
        listener.set_alpn_protocols(ALPN)
        listener.sni_callback = self._choose
        self.listener = listener

    def _choose(self, connection: ssl.SSLObject, server_name: str | None,
                _listener: ssl.SSLContext) -> None:
        if server_name == CLUSTER_SERVER_NAME and self.internal is not None:
            connection.context = self.internal
        else:
            connection.context = self.current

    def reload(self) -> bool:
        """Read the certificate and key again; True once new connections get them.
        A pair that does not load is refused with one log line, and the one in use stays."""
        try:
            fresh = operator_context(self.cert, self.key)
        except ConfigError as exc:
            log.error("TLS certificate not reloaded, the one in use stays: %s", exc)
            return False
        self.current = fresh
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True
