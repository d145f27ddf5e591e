"""The access rules as pure functions: patterns, roles, grants, public repositories, token
scopes and how far a scope is granted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.access.errors import AdminInputInvalid
from node.access.rules import (
    ADMIN,
    DELETE,
    MANAGE,
    PULL,
    PUSH,
    REPOSITORY_ACTIONS,
    ROLE_ACTIONS,
    GrantRule,
    Scope,
    allowed_scope,
    covers,
    granted_actions,
    is_admin,
    is_public,
    may_list,
    parse_account_name,
    parse_pattern,
    parse_role,
    parse_scope,
)
from node.names import is_repository_name

components = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)
repositories = st.lists(components, min_size=1, max_size=4).map("/".join)
actions = st.frozensets(st.sampled_from([PULL, PUSH, DELETE, MANAGE, ADMIN]))


# -- patterns -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "repo", "covered"),
    [
        ("team/app", "team/app", True),
        ("team/app", "team/app2", False),
        ("team/app", "team", False),
        ("team/*", "team/app", True),
        ("team/*", "team/a/b", True),  # `*` crosses slashes
        ("team/*", "team", False),
        ("team/*", "teams/app", False),
        ("team/*", "other/team/app", False),
        ("*", "anything/at/all", True),
        ("*/base", "library/base", True),
        ("*/base", "library/base2", False),
        ("lib*", "library/base", True),
    ],
)
def test_a_pattern_covers_the_repositories_it_names(pattern: str, repo: str,
                                                    covered: bool) -> None:
    assert covers(parse_pattern(pattern), repo) is covered


@given(repositories)
def test_star_covers_every_repository_and_a_name_covers_itself(repo: str) -> None:
    assert is_repository_name(repo)
    assert covers("*", repo)
    assert covers(parse_pattern(repo), repo)


@given(repositories, repositories)
def test_a_namespace_glob_covers_everything_under_it_and_nothing_beside(
    namespace: str, rest: str
) -> None:
    pattern = parse_pattern(f"{namespace}/*")
    assert covers(pattern, f"{namespace}/{rest}")
    assert not covers(pattern, namespace)
    assert not covers(pattern, f"{namespace}x/{rest}")


@pytest.mark.parametrize(
    "pattern",
    ["", "Team/*", "team/[ab]", "team/?", "team//app", "/team", "team/", "a" * 256, "te am",
     "team/app:1", "**/../x"],
)
def test_patterns_outside_the_name_grammar_are_refused(pattern: str) -> None:
    with pytest.raises(AdminInputInvalid):
        parse_pattern(pattern)


def test_account_names_and_roles_are_checked() -> None:
    assert parse_account_name("ci-bot.1") == "ci-bot.1"
    for bad in ("", "-x", "Alice", "a" * 65, "a b", "a:b", "a/b"):
        with pytest.raises(AdminInputInvalid):
            parse_account_name(bad)
    assert parse_role("maintainer") == "maintainer"
    with pytest.raises(AdminInputInvalid):
        parse_role("owner")


# -- roles and grants ---------------------------------------------------------


def test_each_role_adds_to_the_one_below() -> None:
    assert ROLE_ACTIONS["reader"] == {PULL}
    assert ROLE_ACTIONS["writer"] == {PULL, PUSH}
    assert ROLE_ACTIONS["maintainer"] == {PULL, PUSH, DELETE, MANAGE}
    assert ROLE_ACTIONS["admin"] == {PULL, PUSH, DELETE, MANAGE, ADMIN}


def test_an_accounts_actions_are_the_union_of_its_matching_grants() -> None:
    grants = [GrantRule("team/*", "reader"), GrantRule("team/app", "writer"),
              GrantRule("ops/*", "maintainer")]
    assert granted_actions(grants, "team/app") == {PULL, PUSH}
    assert granted_actions(grants, "team/web") == {PULL}
    assert granted_actions(grants, "ops/db") == {PULL, PUSH, DELETE, MANAGE}
    assert granted_actions(grants, "library/base") == frozenset()
    assert granted_actions([], "team/app") == frozenset()


def test_only_admin_on_every_repository_is_admin_of_the_cluster() -> None:
    assert is_admin([GrantRule("team/*", "reader"), GrantRule("*", "admin")])
    assert not is_admin([GrantRule("team/*", "admin")])
    assert not is_admin([GrantRule("*", "maintainer")])
    assert not is_admin([])


def test_public_patterns_and_the_catalog() -> None:
    public = ["library/*", "tools/jq"]
    assert is_public(public, "library/base")
    assert is_public(public, "tools/jq")
    assert not is_public(public, "tools/yq")
    assert not is_public([], "library/base")
    reader = [GrantRule("team/*", "reader")]
    assert may_list(reader, public, "team/app")
    assert may_list(reader, public, "library/base")
    assert may_list([], public, "library/base")
    assert not may_list(reader, public, "ops/db")


# -- scopes -------------------------------------------------------------------


def test_a_repository_scope_parses_with_its_actions_once_each() -> None:
    scope = parse_scope("repository:team/app:pull,push,pull")
    assert scope == Scope("repository", "team/app", ("pull", "push"))
    assert str(scope) == "repository:team/app:pull,push"
    assert parse_scope("repository:team/app:") == Scope("repository", "team/app", ())
    assert parse_scope("registry:catalog:*") == Scope("registry", "catalog", ("*",))


@pytest.mark.parametrize(
    "text",
    ["", "repository", "repository:team/app", "repository:Team/App:pull",
     "repository:team//app:pull", "registry:other:*", "plugin:x:pull",
     "repository:" + "a" * 1100 + ":pull", "repository:host:5000/app:pull"],
)
def test_scopes_the_endpoint_cannot_answer_are_ignored_not_errors(text: str) -> None:
    assert parse_scope(text) is None


@given(repositories, st.lists(st.sampled_from(["pull", "push", "delete", "*", "x"]), max_size=5))
def test_a_scope_round_trips_through_its_text(repo: str, wanted: list[str]) -> None:
    scope = parse_scope(f"repository:{repo}:{','.join(wanted)}")
    assert scope is not None
    assert scope.name == repo
    assert scope.actions == tuple(dict.fromkeys(wanted))
    assert parse_scope(str(scope)) == scope


def test_a_scope_is_cut_down_to_what_the_caller_may_do() -> None:
    asked = Scope("repository", "team/app", ("pull", "push", "delete"))
    assert allowed_scope(asked, ROLE_ACTIONS["reader"]).actions == ("pull",)
    assert allowed_scope(asked, ROLE_ACTIONS["writer"]).actions == ("pull", "push")
    assert allowed_scope(asked, frozenset()).actions == ()
    everything = Scope("repository", "team/app", ("*",))
    assert allowed_scope(everything, ROLE_ACTIONS["admin"]).actions == ("delete", "pull", "push")


@given(repositories, st.lists(st.sampled_from(["pull", "push", "delete", "*", "manage",
                                               "admin", "x"]), max_size=6), actions)
def test_a_granted_scope_never_exceeds_the_ask_the_grants_or_the_repository_actions(
    repo: str, wanted: list[str], may: frozenset[str]
) -> None:
    asked = Scope("repository", repo, tuple(dict.fromkeys(wanted)))
    granted = allowed_scope(asked, may)
    assert granted.name == repo and granted.type == "repository"
    assert set(granted.actions) <= may & REPOSITORY_ACTIONS
    if "*" not in wanted:
        assert set(granted.actions) <= set(wanted)
    else:
        assert set(granted.actions) == may & REPOSITORY_ACTIONS
    assert list(granted.actions) == sorted(granted.actions)
