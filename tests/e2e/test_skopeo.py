"""skopeo copies OCI layouts through a real node, inspects, lists tags and deletes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import NodeProcess
from tests.e2e.clients import Docker, Skopeo
from tests.e2e.images import OCI_MANIFEST, ImageLayout, host_architecture, sha256_digest

pytestmark = pytest.mark.e2e


def busybox_layout(root: Path, *tags: str) -> ImageLayout:
    """A layout whose image has a busybox layer and a small layer of its own per tag."""
    layout = ImageLayout.create(root)
    base = layout.add_layer(busybox=True)
    for tag in tags:
        own = layout.add_layer({"etc/tag": tag.encode()})
        layout.add_image(tag, [base, own])
    return layout


def registry_reference(node: NodeProcess, repo: str, tag: str) -> str:
    return f"docker://{node.address}/{repo}:{tag}"


def test_copy_oci_layout_to_registry_and_back_keeps_every_blob(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    source = busybox_layout(tmp_path / "source", "v1")

    skopeo.copy(f"oci:{source.root}:v1", registry_reference(node_process, repo, "v1"))
    skopeo.copy(registry_reference(node_process, repo, "v1"), f"oci:{tmp_path / 'back'}:v1")

    back = ImageLayout(tmp_path / "back")
    assert back.manifest_digest("v1") == source.manifest_digest("v1")
    assert back.blob_digests() == source.blob_digests()
    back.verify_blobs()
    for digest in source.blob_digests():
        assert back.blob_path(digest).read_bytes() == source.blob_path(digest).read_bytes()


def test_registry_serves_manifest_pushed_by_skopeo_byte_for_byte(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    source = busybox_layout(tmp_path / "source", "v1")
    digest = source.manifest_digest("v1")

    skopeo.copy(f"oci:{source.root}:v1", registry_reference(node_process, repo, "v1"))

    response = httpx.get(f"{node_process.url}/v2/{repo}/manifests/v1",
                         headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_MANIFEST
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.content == source.blob_path(digest).read_bytes()


def test_inspect_reports_digest_layers_config_and_raw_manifest(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    source = busybox_layout(tmp_path / "source", "v1")
    manifest = source.manifest("v1")
    reference = registry_reference(node_process, repo, "v1")
    skopeo.copy(f"oci:{source.root}:v1", reference)

    summary = skopeo.inspect_json(reference)
    assert summary["Digest"] == source.manifest_digest("v1")
    assert summary["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert summary["Os"] == "linux"
    assert summary["Architecture"] == host_architecture()

    raw = skopeo.inspect(reference, "--raw").stdout.encode()
    assert sha256_digest(raw) == source.manifest_digest("v1")

    config = skopeo.inspect(reference, "--config", "--raw").stdout.encode()
    assert sha256_digest(config) == manifest["config"]["digest"]


def test_list_tags_lists_every_pushed_tag_in_order(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    tags = ["v2", "latest", "v1", "1.0"]
    source = busybox_layout(tmp_path / "source", *tags)
    for tag in tags:
        skopeo.copy(f"oci:{source.root}:{tag}", registry_reference(node_process, repo, tag))

    listed = skopeo.list_tags(f"docker://{node_process.address}/{repo}")

    assert listed == sorted(tags)


def test_delete_removes_manifest_and_its_tag_but_not_other_images(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    source = busybox_layout(tmp_path / "source", "doomed", "kept")
    doomed = source.manifest_digest("doomed")
    for tag in ("doomed", "kept"):
        skopeo.copy(f"oci:{source.root}:{tag}", registry_reference(node_process, repo, tag))

    skopeo.delete(registry_reference(node_process, repo, "doomed"))

    manifests = f"{node_process.url}/v2/{repo}/manifests"
    by_digest = httpx.get(f"{manifests}/{doomed}", headers={"Accept": OCI_MANIFEST})
    assert by_digest.status_code == 404
    assert by_digest.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert httpx.head(f"{manifests}/doomed", headers={"Accept": OCI_MANIFEST}).status_code == 404
    assert skopeo.inspect(registry_reference(node_process, repo, "doomed")).returncode != 0
    assert skopeo.list_tags(f"docker://{node_process.address}/{repo}") == ["kept"]
    kept = skopeo.inspect_json(registry_reference(node_process, repo, "kept"))
    assert kept["Digest"] == source.manifest_digest("kept")


def test_image_copied_by_skopeo_runs_with_docker(
    docker: Docker, skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path,
    local_images: list[str],
) -> None:
    source = busybox_layout(tmp_path / "source", "from-skopeo")
    skopeo.copy(f"oci:{source.root}:from-skopeo",
                registry_reference(node_process, repo, "from-skopeo"))

    reference = f"{node_process.address}/{repo}:from-skopeo"
    local_images.append(reference)
    run = docker("run", "--rm", reference, "sh", "-c", "echo skopeo pushed; cat /etc/tag")

    assert run.stdout.endswith("skopeo pushed\nfrom-skopeo")


def test_copy_between_repositories_of_the_registry(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    source = busybox_layout(tmp_path / "source", "v1")
    skopeo.copy(f"oci:{source.root}:v1", registry_reference(node_process, repo, "v1"))

    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           registry_reference(node_process, repo, "v1"),
           registry_reference(node_process, f"{repo}/copy", "v1"))

    summary = skopeo.inspect_json(registry_reference(node_process, f"{repo}/copy", "v1"))
    assert summary["Digest"] == source.manifest_digest("v1")
