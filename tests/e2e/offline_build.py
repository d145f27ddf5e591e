"""What building the Flotilla image needs on a machine that cannot pull images or
reach PyPI from inside a build container.

The base image is a minimal Debian bookworm with python3 and its venv module,
made by `debootstrap` from the mirror this machine's apt uses and loaded with
`docker import`; it is built once per docker engine (skipped while the image
exists). The wheelhouse is the project and its dependencies as wheels, made
by the host's pip (which reaches PyPI, through whatever certificates the host
trusts) in `build/wheelhouse`, a folder the Dockerfile installs from when its
`WHEELHOUSE` build argument names it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.e2e.clients import Docker, run

BASE_IMAGE = "flotilla-test-base:bookworm"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,ca-certificates"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
# Left out of the image: apt's downloaded packages and indexes, documentation
# and translations; nothing a node runs needs them, and they are half the tree.
PRUNED = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*", "./usr/share/doc/*",
          "./usr/share/man/*", "./usr/share/locale/*", "./usr/share/info/*")
DEBOOTSTRAP_TIMEOUT = 900.0  # seconds; a slow mirror must fail the run, not hang it
WHEELHOUSE = Path("build/wheelhouse")  # relative to the project root (the build context)
PIP_TIMEOUT = 600.0


def debian_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive this machine's apt fetches `SUITE` from (not the security one)."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(source.glob("*.list")) + sorted(source.glob("*.sources"))
        elif source.is_file():
            files.append(source)
    for path in files:
        text = path.read_text(errors="replace")
        # One-line format: "deb [options] URI SUITE COMPONENTS…".
        for match in re.finditer(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M):
            return match.group(1)
        # deb822 format: stanzas of "URIs:" and "Suites:" fields.
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:(.*)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    return FALLBACK_MIRROR


def ensure_base_image(docker: Docker) -> str:
    """The reference of a bookworm + python3 image, made now unless it already exists."""
    if docker.exists(BASE_IMAGE):
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="flotilla-base-") as scratch:
        root = Path(scratch) / "rootfs"
        run("debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root),
            debian_mirror(), timeout=DEBOOTSTRAP_TIMEOUT)
        _import_tree(root, BASE_IMAGE)
    return BASE_IMAGE


def _import_tree(root: Path, reference: str) -> None:
    """Stream `root` as a tar into `docker import`, without holding it in memory."""
    excludes = [f"--exclude={pattern}" for pattern in PRUNED]
    tar = subprocess.Popen(["tar", "-C", str(root), *excludes, "-c", "."],
                           stdout=subprocess.PIPE)
    assert tar.stdout is not None
    try:
        imported = subprocess.run(["docker", "import", "-", reference], stdin=tar.stdout,
                                  capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT)
    finally:
        tar.stdout.close()
        tar_status = tar.wait()
    if tar_status != 0 or imported.returncode != 0:
        raise RuntimeError(f"importing {root} as {reference} failed (tar {tar_status}):\n"
                           f"{imported.stderr}")


def build_wheelhouse(project: Path) -> Path:
    """Wheels of the project's dependencies and its build backend, in `WHEELHOUSE`
    under `project`; returns that path relative to `project`, as the build argument.

    Compiled wheels are for this interpreter, so its minor version must be the
    base image's (3.11 for bookworm); a mismatch fails the image build, loudly."""
    wheelhouse = project / WHEELHOUSE
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--wheel-dir", str(wheelhouse), str(project), "setuptools>=68", timeout=PIP_TIMEOUT)
    # The image builds the project from its source; its own wheel, different at
    # every build, would only defeat docker's layer cache.
    for own_wheel in wheelhouse.glob("flotilla-*.whl"):
        own_wheel.unlink()
    return WHEELHOUSE
