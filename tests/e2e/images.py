"""Images the end-to-end tests push, made without pulling anything from outside.

A root filesystem is a tar holding the static busybox binary and an `sh`
link to it: enough for `docker run IMAGE sh -c 'echo …'`. OCI image layouts
are written here by hand, byte for byte, so a round trip through the
registry can be checked blob for blob. Layers are gzip streams at level 0
(stored, not compressed): valid `tar+gzip` that skopeo copies unchanged, and
cheap to make even at hundreds of MiB.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX_CANDIDATES = (Path("/usr/bin/busybox"), Path("/bin/busybox"))
MiB = 1 << 20
GO_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
                    "s390x": "s390x", "riscv64": "riscv64"}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def host_architecture() -> str:
    """This machine's architecture as OCI names it (Go's GOARCH)."""
    machine = platform.machine()
    return GO_ARCHITECTURES.get(machine, machine)


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("no busybox binary: install busybox-static")


def rootfs_tar(extra_files: Mapping[str, bytes] = {}) -> bytes:
    """A root filesystem with busybox as /bin/sh, plus `extra_files` (path → content)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, find_busybox().read_bytes(), extra_files)
    return out.getvalue()


def _add_tree(tar: tarfile.TarFile, busybox: bytes, extra_files: Mapping[str, bytes]) -> None:
    for folder in ("bin", "tmp", "etc"):
        info = tarfile.TarInfo(folder)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    binary = tarfile.TarInfo("bin/busybox")
    binary.size, binary.mode = len(busybox), 0o755
    tar.addfile(binary, io.BytesIO(busybox))
    for applet in ("sh", "echo", "cat", "ls"):
        link = tarfile.TarInfo(f"bin/{applet}")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    _add_files(tar, extra_files)


def _add_files(tar: tarfile.TarFile, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        info = tarfile.TarInfo(name.lstrip("/"))
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through on its way to `target`."""

    def __init__(self, target: IO[bytes]):
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


class _RandomReader(io.RawIOBase):
    """`size` random bytes, read on demand, so a large layer never sits in memory."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


class ImageLayout:
    """An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`)."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs" / "sha256"

    @classmethod
    def create(cls, root: Path) -> ImageLayout:
        layout = cls(root)
        layout.blobs.mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
        return layout

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = sha256_digest(data)
        (self.blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def add_layer(self, files: Mapping[str, bytes] = {}, *, busybox: bool = False,
                  random_file_size: int = 0) -> tuple[Descriptor, str]:
        """Write a tar+gzip layer; returns its descriptor and its diff id (the tar's digest).

        The layer holds `files`, busybox as /bin/sh when asked, and a file of
        `random_file_size` random bytes streamed straight to disk.
        """
        spool = self.root / "layer.partial"
        with open(spool, "wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=0, mtime=0) as gz:
                uncompressed = _HashingWriter(gz)
                tar = tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT)
                with tar:
                    if busybox:
                        _add_tree(tar, find_busybox().read_bytes(), files)
                    else:
                        _add_files(tar, files)
                    if random_file_size:
                        info = tarfile.TarInfo("random.bin")
                        info.size = random_file_size
                        tar.addfile(info, _RandomReader(random_file_size))
        digest = "sha256:" + compressed.sha256.hexdigest()
        shutil.move(spool, self.blobs / digest.removeprefix("sha256:"))
        diff_id = "sha256:" + uncompressed.sha256.hexdigest()
        return Descriptor(OCI_LAYER_GZIP, digest, compressed.size), diff_id

    def add_image(self, tag: str, layers: list[tuple[Descriptor, str]]) -> Descriptor:
        """Write a config and a manifest over `layers`, and name the manifest `tag`."""
        config = {
            # The host's busybox runs only on the host's architecture.
            "architecture": host_architecture(),
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        }
        config_descriptor = self.add_blob(_canonical(config), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_descriptor.as_json(),
            "layers": [layer.as_json() for layer, _ in layers],
        }
        descriptor = self.add_blob(_canonical(manifest), OCI_MANIFEST)
        index = json.loads((self.root / "index.json").read_text())
        entry = descriptor.as_json() | {"annotations": {"org.opencontainers.image.ref.name": tag}}
        index["manifests"].append(entry)
        (self.root / "index.json").write_text(json.dumps(index))
        return descriptor

    def manifest_digest(self, tag: str) -> str:
        index = json.loads((self.root / "index.json").read_text())
        for entry in index["manifests"]:
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return entry["digest"]
        raise KeyError(f"no manifest tagged {tag!r} in {self.root}")

    def manifest(self, tag: str) -> dict[str, Any]:
        return json.loads(self.blob_path(self.manifest_digest(tag)).read_bytes())

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def blob_digests(self) -> set[str]:
        return {"sha256:" + path.name for path in self.blobs.iterdir()}

    def verify_blobs(self) -> None:
        """Every blob's bytes hash to its name: nothing torn, nothing mislabelled."""
        for digest in self.blob_digests():
            assert file_digest(self.blob_path(digest)) == digest, f"blob {digest} is corrupt"


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
