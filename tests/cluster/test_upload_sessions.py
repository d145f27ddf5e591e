"""Upload sessions are capped per node and per repository; a closed one frees its slot."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.cluster.conftest import Cluster


def write_config(path: Path, **settings: object) -> Path:
    path.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items()))
    return path


def start(url: str, repo: str) -> httpx.Response:
    return httpx.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=10)


def session_dirs(cluster: Cluster, node_id: str) -> int:
    return len(list((cluster.nodes[node_id].data / "uploads").iterdir()))


def assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(response.headers["Retry-After"]) >= 1


def test_posts_beyond_the_repository_and_node_caps_get_429_and_make_no_session(
    cluster_factory, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "caps.toml", max_upload_sessions=5, max_upload_sessions_per_repo=3
    )
    cluster: Cluster = cluster_factory(1, "--config", str(config))
    url = cluster.nodes["n1"].url
    first = [start(url, "team/a") for _ in range(3)]
    assert [r.status_code for r in first] == [202, 202, 202]
    assert_too_many(start(url, "team/a"))
    assert session_dirs(cluster, "n1") == 3

    assert [start(url, "team/b").status_code for _ in range(2)] == [202, 202]
    assert_too_many(start(url, "team/c"))
    assert session_dirs(cluster, "n1") == 5

    cancelled = httpx.delete(f"{url}{first[0].headers['Location']}", timeout=10)
    assert cancelled.status_code == 204
    again = start(url, "team/a")
    assert again.status_code == 202, again.text
    assert session_dirs(cluster, "n1") == 5


def test_an_expired_session_frees_its_slot(cluster_factory, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "caps.toml", max_upload_sessions_per_repo=1, upload_idle_seconds=1.0
    )
    cluster: Cluster = cluster_factory(1, "--config", str(config))
    url = cluster.nodes["n1"].url
    old = start(url, "team/a")
    assert old.status_code == 202
    assert_too_many(start(url, "team/a"))
    # Past its idle time the session no longer counts: the next POST gets its slot.
    for _ in range(100):
        response = start(url, "team/a")
        if response.status_code == 202:
            break
        assert_too_many(response)
        time.sleep(0.1)
    assert response.status_code == 202
    assert httpx.get(f"{url}{old.headers['Location']}", timeout=10).status_code == 404
    assert session_dirs(cluster, "n1") == 1
