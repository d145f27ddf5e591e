"""A `flotilla serve` process with access control on, and its admin, for tests.

The end-to-end tests (real docker, podman, skopeo) and the CLI tests both need
a node that refuses strangers and an operator who manages its accounts the way
a user does: the first admin made with the cluster secret, everything after
through `flotilla user|robot|grant|repo …` as that admin. The node's URL and
scheme live here, in one place, so a TLS variant only changes how it starts.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.certificates import NodeCertificate
from tests.conftest import ROOT, NodeProcess, free_port
from tests.secret_scan import record_secret

ADMIN, ADMIN_PASSWORD = "admin", "admin-pass-1"
CLI_TIMEOUT = 60.0
ROBOT_TOKEN = re.compile(r"^(flr_\S+)$", re.MULTILINE)


def flotilla(*args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `flotilla` command line as a user runs it, in a process of its own."""
    completed = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], input=stdin, capture_output=True,
        text=True, cwd=ROOT, timeout=CLI_TIMEOUT,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"flotilla {' '.join(args)} exited {completed.returncode}\n"
            f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
        )
    return completed


def record_login(name: str, secret: str) -> None:
    """Tell the suite's log scan about a password or robot token and the Basic
    credentials it travels in: no log line may hold either."""
    record_secret(secret)
    record_secret(base64.b64encode(f"{name}:{secret}".encode()).decode())


@dataclass
class SecuredNode:
    """A node run with `--auth MODE`, an admin account on it, and the admin's CLI."""

    node: NodeProcess
    auth: str
    admin_password_file: Path
    scheme: str = "http"
    ca_file: Path | None = None  # the CA that signed the node's certificate, under TLS
    host: str = "127.0.0.1"  # where every client reaches it (the certificate names it)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    @property
    def address(self) -> str:
        """host:port, as image references and `docker login` name the registry."""
        return f"{self.host}:{self.node.port}"

    @property
    def data(self) -> Path:
        return self.node.data

    @property
    def audit_log(self) -> Path:
        return self.node.data / "audit.log"

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def logs_text(self) -> str:
        """Everything the node wrote: its own log and its audit log."""
        assert self.node.log is not None
        audit = self.audit_log.read_text() if self.audit_log.exists() else ""
        return self.node.log.read_text(errors="replace") + audit

    def admin(self, *args: str, stdin: str = "",
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """`flotilla ARGS --url URL --as admin`: an access command as the admin."""
        return flotilla(*args, *self.cli_target(), "--as", ADMIN,
                        "--as-password-file", str(self.admin_password_file),
                        stdin=stdin, check=check)

    def cli_target(self) -> list[str]:
        """The options that point an access command at this node."""
        ca = ["--ca-file", str(self.ca_file)] if self.ca_file is not None else []
        return ["--url", self.url, *ca]

    def add_user(self, name: str, password: str, *grants: tuple[str, str]) -> None:
        """A user with `password` and each (role, pattern) grant."""
        record_login(name, password)
        self.admin("user", "add", name, "--password-stdin", stdin=password + "\n")
        for role, pattern in grants:
            self.admin("grant", name, role, pattern)

    def add_robot(self, name: str, *grants: tuple[str, str], expires: str = "1d") -> str:
        """A robot with each (role, pattern) grant; its token, as `robot add` printed it."""
        out = self.admin("robot", "add", name, "--expires", expires).stdout
        match = ROBOT_TOKEN.search(out)
        assert match, f"no token in the output of robot add:\n{out}"
        record_login(name, match.group(1))
        for role, pattern in grants:
            self.admin("grant", name, role, pattern)
        return match.group(1)

    def get(self, path: str, auth: tuple[str, str] | None = None, **kwargs: Any
            ) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=auth, timeout=30, verify=self.verify,
                         **kwargs)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client checks the node's certificate against."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> None:
        self.node.stop()


def start_secured_node(root: Path, auth: str = "token", extra: tuple[str, ...] = (), *,
                       certificate: NodeCertificate | None = None,
                       host: str = "127.0.0.1") -> SecuredNode:
    """A fresh node with `--auth auth` under `root`, and its first admin, made with the
    cluster secret as the README says. With `certificate` it serves HTTPS on every
    address, for clients that reach it at `host` (which the certificate names)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if certificate is None:
        node = NodeProcess(root / "node", port, ["--auth", auth, *extra])
    else:
        node = NodeProcess(
            root / "node", port,
            ["--listen", f"0.0.0.0:{port}", "--advertise-host", "127.0.0.1",
             *certificate.args, "--auth", auth, *extra],
            scheme="https", verify=certificate.trusting_context(),
        )
    node.start()
    record_login(ADMIN, ADMIN_PASSWORD)
    password_file = root / "admin-password"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    password_file.chmod(0o600)
    secured = SecuredNode(node, auth, password_file, host=host)
    if certificate is not None:
        secured.scheme, secured.ca_file = "https", certificate.ca_file
    try:
        flotilla("user", "add", ADMIN, "--role", "admin", *secured.cli_target(),
                 "--secret-file", str(node.data / "secret"), "--password-stdin",
                 stdin=ADMIN_PASSWORD + "\n")
    except BaseException:
        node.stop()
        raise
    return secured
