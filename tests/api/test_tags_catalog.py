"""`/v2/<name>/tags/list` and `/v2/_catalog`: order, `n`/`last` pagination, `Link`."""

from __future__ import annotations

import pytest

from tests.api.content import assert_error, follow_pages, push_blob, push_image, put_manifest
from tests.conftest import Registry

NAME = "team/app"
# Shuffled on purpose; the spec's order is case-insensitive, ties broken by case.
TAGS = ["v2", "B", "latest", "a", "A", "10", "9", "_build", "b", "v1.0", "Latest"]
ORDERED = ["10", "9", "_build", "A", "a", "B", "b", "Latest", "latest", "v1.0", "v2"]


async def push_tags(registry: Registry, name: str, tags: list[str]) -> None:
    pushed = await push_image(registry.client, name)
    for tag in tags:
        response = await put_manifest(registry.client, name, tag, pushed.body, pushed.media_type)
        assert response.status_code == 201


async def test_tags_are_listed_in_case_insensitive_order(registry: Registry) -> None:
    await push_tags(registry, NAME, TAGS)
    response = await registry.client.get(f"/v2/{NAME}/tags/list")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"name": NAME, "tags": ORDERED}
    assert "Link" not in response.headers


async def test_tags_page_with_n_and_a_link_to_the_next(registry: Registry) -> None:
    await push_tags(registry, NAME, TAGS)
    response = await registry.client.get(f"/v2/{NAME}/tags/list", params={"n": 4})
    assert response.json()["tags"] == ORDERED[:4]
    link = response.headers["Link"]
    assert link.startswith(f"</v2/{NAME}/tags/list?") and link.endswith('>; rel="next"')
    assert "n=4" in link and "last=A" in link


async def test_following_links_visits_every_tag_once_in_order(registry: Registry) -> None:
    await push_tags(registry, NAME, TAGS)
    pages = await follow_pages(registry.client, f"/v2/{NAME}/tags/list?n=3", "tags")
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [t for page in pages for t in page] == ORDERED


async def test_n_equal_to_the_count_returns_all_without_link(registry: Registry) -> None:
    await push_tags(registry, NAME, TAGS)
    response = await registry.client.get(f"/v2/{NAME}/tags/list", params={"n": len(TAGS)})
    assert response.json()["tags"] == ORDERED
    assert "Link" not in response.headers


async def test_last_starts_after_the_given_tag(registry: Registry) -> None:
    await push_tags(registry, NAME, TAGS)
    response = await registry.client.get(f"/v2/{NAME}/tags/list", params={"last": "b"})
    assert response.json()["tags"] == ORDERED[ORDERED.index("b") + 1 :]
    both = await registry.client.get(f"/v2/{NAME}/tags/list", params={"last": "A", "n": 2})
    assert both.json()["tags"] == ["a", "B"]
    assert "Link" in both.headers


async def test_last_that_is_not_a_tag_starts_at_its_place_in_the_order(
    registry: Registry,
) -> None:
    await push_tags(registry, NAME, TAGS)
    response = await registry.client.get(f"/v2/{NAME}/tags/list", params={"last": "c"})
    assert response.json()["tags"] == ["Latest", "latest", "v1.0", "v2"]
    after_all = await registry.client.get(f"/v2/{NAME}/tags/list", params={"last": "zzz"})
    assert after_all.json()["tags"] == []


async def test_n_zero_gives_an_empty_list_and_no_link(registry: Registry) -> None:
    await push_tags(registry, NAME, TAGS)
    response = await registry.client.get(f"/v2/{NAME}/tags/list", params={"n": 0})
    assert response.status_code == 200
    assert response.json() == {"name": NAME, "tags": []}
    assert "Link" not in response.headers


async def test_huge_n_is_capped_not_refused(registry: Registry) -> None:
    await push_tags(registry, NAME, ["v1"])
    for n in ("100000", "9" * 30, "0" * 50 + "5"):
        response = await registry.client.get(f"/v2/{NAME}/tags/list", params={"n": n})
        assert response.status_code == 200, n
        assert response.json()["tags"] == ["v1"]


async def test_bad_n_is_400_for_tags_and_catalog(registry: Registry) -> None:
    await push_tags(registry, NAME, ["v1"])
    for path in (f"/v2/{NAME}/tags/list", "/v2/_catalog"):
        for n in ("-1", "abc", "1.5", "1e3", " 1", "²", "٣", "0x10"):
            response = await registry.client.get(path, params={"n": n})
            assert response.status_code == 400, (path, n, response.status_code)
            assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


async def test_tags_of_an_unknown_repository_are_name_unknown(registry: Registry) -> None:
    response = await registry.client.get("/v2/team/nothing/tags/list")
    assert_error(response, 404, "NAME_UNKNOWN")


async def test_repository_whose_tags_were_all_deleted_lists_none(registry: Registry) -> None:
    await push_tags(registry, NAME, ["v1", "v2"])
    for tag in ("v1", "v2"):
        assert (await registry.client.delete(f"/v2/{NAME}/manifests/{tag}")).status_code == 202
    response = await registry.client.get(f"/v2/{NAME}/tags/list")
    assert response.status_code == 200
    assert response.json()["tags"] == []


async def test_longest_tag_is_listed(registry: Registry) -> None:
    longest = "t" * 128
    await push_tags(registry, NAME, [longest])
    assert (await registry.client.get(f"/v2/{NAME}/tags/list")).json()["tags"] == [longest]


# Catalog

REPOS = ["zeta", "alpha/one", "alpha", "alpha/two", "beta-1", "beta.2", "beta_3", "m/n/o"]


async def push_repos(registry: Registry) -> None:
    for i, repo in enumerate(REPOS):
        await push_blob(registry.client, repo, f"content {i}".encode())


async def test_catalog_lists_every_repository_in_order(registry: Registry) -> None:
    await push_repos(registry)
    response = await registry.client.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": sorted(REPOS)}
    assert "Link" not in response.headers


async def test_catalog_of_an_empty_registry_is_empty(registry: Registry) -> None:
    response = await registry.client.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": []}


async def test_catalog_pages_with_n_last_and_link(registry: Registry) -> None:
    await push_repos(registry)
    first = await registry.client.get("/v2/_catalog", params={"n": 3})
    assert first.json()["repositories"] == sorted(REPOS)[:3]
    link = first.headers["Link"]
    assert link.startswith("</v2/_catalog?") and link.endswith('>; rel="next"')
    pages = await follow_pages(registry.client, "/v2/_catalog?n=3", "repositories")
    assert [r for page in pages for r in page] == sorted(REPOS)
    after = await registry.client.get("/v2/_catalog", params={"last": "beta-1"})
    assert after.json()["repositories"] == sorted(REPOS)[sorted(REPOS).index("beta-1") + 1 :]


@pytest.mark.parametrize("query", ["n=0", "n=0&last=alpha"])
async def test_catalog_n_zero_is_empty_without_link(registry: Registry, query: str) -> None:
    await push_repos(registry)
    response = await registry.client.get(f"/v2/_catalog?{query}")
    assert response.status_code == 200
    assert response.json() == {"repositories": []}
    assert "Link" not in response.headers


async def test_catalog_shows_a_repository_that_only_holds_tags(registry: Registry) -> None:
    await push_tags(registry, "solo", ["v1"])
    response = await registry.client.get("/v2/_catalog")
    assert response.json()["repositories"] == ["solo"]
