"""Majority arithmetic of the Raft core (consensus/raft/quorum.py): how many
voters make a majority, which index a majority holds, and how a vote stands."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consensus.raft.quorum import VoteResult, committed_index, majority, vote_result


def holding(matches: dict[str, int]) -> Callable[[str], int]:
    """A match_of that knows `matches` and nothing of anyone else."""
    return lambda voter: matches.get(voter, 0)


@pytest.mark.parametrize(
    ("voters", "needed"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
def test_a_majority_is_more_than_half_of_the_voters(voters: int, needed: int) -> None:
    assert majority(voters) == needed


def test_a_single_voter_commits_whatever_it_holds() -> None:
    assert committed_index(["a"], holding({"a": 7})) == 7


def test_three_voters_commit_what_two_of_them_hold() -> None:
    assert committed_index(["a", "b", "c"], holding({"a": 9, "b": 5, "c": 2})) == 5


def test_five_voters_commit_what_three_of_them_hold() -> None:
    matches = {"a": 1, "b": 8, "c": 3, "d": 6, "e": 4}
    assert committed_index(["a", "b", "c", "d", "e"], matches.__getitem__) == 4


def test_four_voters_commit_only_what_three_of_them_hold() -> None:
    # Half of four is not a majority: a formula that takes two voters (n // 2
    # or ceil(n / 2)) would commit 7 here, which two other voters lack.
    assert committed_index(["a", "b", "c", "d"], holding({"a": 7, "b": 7, "c": 4, "d": 2})) == 4


def test_two_voters_commit_only_what_both_hold() -> None:
    assert committed_index(["a", "b"], holding({"a": 6, "b": 3})) == 3


def test_a_voter_not_heard_from_holds_nothing() -> None:
    assert committed_index(["a", "b", "c"], holding({"a": 9})) == 0
    assert committed_index(["a", "b", "c"], holding({"a": 9, "c": 4})) == 4


def test_indexes_held_by_non_voters_do_not_commit_anything() -> None:
    matches = {"a": 9, "b": 1, "c": 1, "removed": 9, "joining": 9}
    assert committed_index(["a", "b", "c"], holding(matches)) == 1


def test_an_empty_configuration_commits_nothing() -> None:
    assert committed_index([], holding({"a": 5})) == 0


def test_a_single_voter_wins_with_its_own_vote() -> None:
    assert vote_result(["a"], {"a": True}) is VoteResult.WON


def test_a_vote_is_won_by_a_majority_of_yes() -> None:
    assert vote_result(["a", "b", "c"], {"a": True, "c": True}) is VoteResult.WON
    assert vote_result(["a", "b", "c", "d", "e"], {"a": True, "b": True, "e": True}) is (
        VoteResult.WON
    )


def test_a_vote_is_lost_once_a_majority_says_no() -> None:
    assert vote_result(["a", "b", "c"], {"a": True, "b": False, "c": False}) is VoteResult.LOST


def test_a_vote_is_pending_until_a_majority_answers_alike() -> None:
    assert vote_result(["a", "b", "c"], {}) is VoteResult.PENDING
    assert vote_result(["a", "b", "c"], {"a": True}) is VoteResult.PENDING
    assert vote_result(["a", "b", "c"], {"a": True, "b": False}) is VoteResult.PENDING


def test_half_of_four_voters_saying_yes_does_not_win() -> None:
    # A formula that takes half the voters as a majority would call this won,
    # and two candidates could then both win the same term.
    assert vote_result(["a", "b", "c", "d"], {"a": True, "b": True}) is VoteResult.PENDING
    assert vote_result(["a", "b", "c", "d"], {"a": True, "b": True, "c": True}) is VoteResult.WON


def test_half_of_four_voters_saying_no_leaves_the_vote_pending() -> None:
    # Winning is impossible by now, but the vote is lost only once a majority
    # says no, as the core has always counted it.
    votes = {"a": True, "b": False, "c": False}
    assert vote_result(["a", "b", "c", "d"], votes) is VoteResult.PENDING
    assert vote_result(["a", "b", "c", "d"], {**votes, "d": False}) is VoteResult.LOST


def test_votes_from_non_voters_are_not_counted() -> None:
    votes = {"a": True, "removed": True, "joining": True}
    assert vote_result(["a", "b", "c"], votes) is VoteResult.PENDING
    assert vote_result(["a", "b", "c"], {"removed": False, "joining": False}) is (
        VoteResult.PENDING
    )
