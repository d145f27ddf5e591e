"""docker, podman and skopeo with credential stores of their own, and how they reach a node.

A login writes credentials somewhere the next command finds them: docker in
its config directory, podman in its auth file. Each client here gets a private
one (`docker --config DIR`, `podman --authfile FILE`), so a test's login never
leaks into another test or into the machine's own `~/.docker`. `Transport`
holds the flags each client needs for the node's scheme: over plain HTTP on
loopback docker needs none (it treats 127.0.0.0/8 as an insecure registry) and
podman and skopeo turn TLS verification off; a TLS variant gives each its CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.certificates import NodeCertificate
from tests.e2e.clients import COMMAND_TIMEOUT, Docker, Skopeo, run


@dataclass(frozen=True)
class Transport:
    """How clients reach the node: its scheme and, for TLS, the CA each client trusts."""

    scheme: str = "http"
    host: str = "127.0.0.1"  # where clients reach the node
    certificate: NodeCertificate | None = None  # the node's, under TLS
    cert_dir: Path | None = None  # holds its CA as ca.crt, for podman and skopeo

    def podman_flags(self) -> list[str]:
        if self.cert_dir is None:
            return ["--tls-verify=false"]
        return ["--cert-dir", str(self.cert_dir)]

    def skopeo_source_flags(self) -> list[str]:
        if self.cert_dir is None:
            return ["--src-tls-verify=false"]
        return ["--src-cert-dir", str(self.cert_dir)]

    def skopeo_destination_flags(self) -> list[str]:
        if self.cert_dir is None:
            return ["--dest-tls-verify=false"]
        return ["--dest-cert-dir", str(self.cert_dir)]


@dataclass(frozen=True)
class DockerAs(Docker):
    """The docker CLI with its own config directory: its own logins."""

    config: Path = Path()

    def __call__(self, *args: str, stdin: bytes = b"", timeout: float = COMMAND_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker", "--config", str(self.config), *args, stdin=stdin,
                   timeout=timeout, check=check)

    def login(self, registry: str, user: str, password: str, *,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("login", registry, "-u", user, "--password-stdin",
                    stdin=password.encode() + b"\n", check=check)


@dataclass(frozen=True)
class Podman:
    """podman with its own auth file; images go to podman's own store, not docker's."""

    authfile: Path
    transport: Transport

    def __call__(self, *args: str, stdin: bytes = b"", timeout: float = COMMAND_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("podman", *args, stdin=stdin, timeout=timeout, check=check)

    def remote(self, command: str, *args: str,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command that talks to a registry (login, push, pull, logout)."""
        return self(command, "--authfile", str(self.authfile), *self.transport.podman_flags(),
                    *args, check=check)

    def login(self, registry: str, user: str, password: str, *,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("login", "--authfile", str(self.authfile), *self.transport.podman_flags(),
                    "-u", user, "--password-stdin", registry,
                    stdin=password.encode() + b"\n", check=check)

    def image_id(self, reference: str) -> str:
        return self("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()


def skopeo_copy(skopeo: Skopeo, transport: Transport, source: str, destination: str, *,
                source_creds: str | None = None, destination_creds: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """`skopeo copy` with `--src-creds`/`--dest-creds` (USER:PASSWORD) when given."""
    args = ["copy", "--retry-times", "0"]
    if source.startswith("docker://"):
        args += transport.skopeo_source_flags()
    if destination.startswith("docker://"):
        args += transport.skopeo_destination_flags()
    if source_creds is not None:
        args += ["--src-creds", source_creds]
    if destination_creds is not None:
        args += ["--dest-creds", destination_creds]
    return skopeo(*args, source, destination, check=check)
