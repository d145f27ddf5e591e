"""The real clients the end-to-end tests drive: the docker CLI and skopeo.

Each call runs the command with a deadline and raises `ClientFailed` with
the command's own output when it exits non-zero, so a failing test shows
what docker or skopeo said rather than a bare exit status.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

COMMAND_TIMEOUT = 180.0  # seconds; generous, a stuck client must not hang CI


class ClientFailed(AssertionError):
    """A docker or skopeo command exited non-zero; the message holds its output."""


def run(*argv: str, stdin: bytes = b"", timeout: float = COMMAND_TIMEOUT,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command to completion, `stdin` as its input, and return its output as text."""
    raw = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    completed = subprocess.CompletedProcess(
        raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
        raw.stderr.decode(errors="replace"),
    )
    if check and completed.returncode != 0:
        raise ClientFailed(
            f"{' '.join(argv)} exited {completed.returncode}\n"
            f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
        )
    return completed


@dataclass(frozen=True)
class Docker:
    """The docker CLI, talking to the local daemon."""

    def __call__(self, *args: str, stdin: bytes = b"", timeout: float = COMMAND_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker", *args, stdin=stdin, timeout=timeout, check=check)

    def import_rootfs(self, rootfs_tar: bytes, reference: str) -> str:
        """`docker import` a root filesystem tar as a one-layer image; returns its id."""
        return self("import", "-", reference, stdin=rootfs_tar).stdout.strip()

    def image_id(self, reference: str) -> str:
        return self("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()

    def layers(self, reference: str) -> list[str]:
        out = self("image", "inspect", "--format", "{{json .RootFS.Layers}}", reference).stdout
        return json.loads(out)

    def exists(self, reference: str) -> bool:
        return self("image", "inspect", reference, check=False).returncode == 0

    def remove(self, *references: str) -> None:
        """Untag references; an image whose last tag goes is deleted with its own layers."""
        self("image", "rm", *references)

    def commit_change(self, image: str, script: str, into: str) -> None:
        """Run `sh -c script` in a container of `image` and commit its changes as `into`."""
        container = self("create", image, "sh", "-c", script).stdout.strip()
        try:
            self("start", "--attach", container)
            self("commit", container, into)
        finally:
            self("rm", "--force", container)


@dataclass(frozen=True)
class Skopeo:
    """skopeo against a plain-HTTP loopback registry (hence TLS verification off)."""

    def __call__(self, *args: str, timeout: float = COMMAND_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("skopeo", "--insecure-policy", *args, timeout=timeout, check=check)

    def copy(self, source: str, destination: str, *, timeout: float = COMMAND_TIMEOUT) -> None:
        args = ["copy", "--retry-times", "0"]
        if source.startswith("docker://"):
            args.append("--src-tls-verify=false")
        if destination.startswith("docker://"):
            args.append("--dest-tls-verify=false")
        self(*args, source, destination, timeout=timeout)

    def copy_command(self, source: str, destination: str) -> list[str]:
        """The argv of `copy`, for tests that run it in the background and interrupt it."""
        return ["skopeo", "--insecure-policy", "copy", "--retry-times", "0",
                "--dest-tls-verify=false", source, destination]

    def inspect(self, reference: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self("inspect", "--tls-verify=false", *extra, reference, check=False)

    def inspect_json(self, reference: str, *extra: str) -> Any:
        completed = self.inspect(reference, *extra)
        if completed.returncode != 0:
            raise ClientFailed(f"skopeo inspect {reference} failed:\n{completed.stderr}")
        return json.loads(completed.stdout)

    def list_tags(self, repository: str) -> list[str]:
        out = self("list-tags", "--tls-verify=false", repository).stdout
        return json.loads(out)["Tags"]

    def delete(self, reference: str) -> None:
        self("delete", "--tls-verify=false", reference)
