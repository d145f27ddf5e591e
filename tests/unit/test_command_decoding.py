"""Whatever bytes a log entry holds, decoding and applying it never stops a node.

A committed entry is applied on every member and again after every restart,
so an entry that made `decode` or `apply_batch` raise would stop the whole
group for good. These tests feed both arbitrary bytes and msgpack maps that
look almost like commands (the right `type`, fields of any type and size).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.state import Refusal, StateMachine
from consensus.store import connect
from tests.unit.test_state_machine import COMMAND, dump

INT64_MAX = 2**63 - 1

# Any value msgpack can carry, nested a little.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.binary(max_size=80)
    | st.sampled_from(["", "0" * 64, "sha256:" + "0" * 64])
    | st.integers(1024, 100_000).map(lambda n: "x" * n)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)

FIELD_NAMES = sorted({f.name for cls in c.COMMANDS.values() for f in dataclasses.fields(cls)})


def valid_body(command: c.Command) -> dict[str, Any]:
    return msgpack.unpackb(command.encode(), raw=False)


@st.composite
def near_commands(draw: st.DrawFn) -> bytes:
    """A valid command's map with some fields replaced, dropped or added."""
    body = valid_body(draw(COMMAND | st.builds(
        c.RegisterMember, node_id=st.just("n1"), raft=st.just("h:1"), http=st.just("h:2")
    ) | st.builds(c.UnregisterMember, node_id=st.just("n1"))
      | st.builds(c.DrainMember, node_id=st.just("n1"), draining=st.booleans())))
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=3, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(VALUES)
        else:
            del body[name]
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES + ["type", "extra"]), max_size=2)):
        body[name] = draw(VALUES)
    if draw(st.booleans()):
        body["type"] = draw(st.sampled_from(sorted(c.COMMANDS)) | st.text(max_size=12))
    return msgpack.packb(body, use_bin_type=True)


ANY_MSGPACK = VALUES.map(lambda v: msgpack.packb(v, use_bin_type=True))
GARBAGE = st.binary(max_size=200) | ANY_MSGPACK | near_commands()


def decodes_or_refuses(data: bytes) -> c.Command | None:
    try:
        command = c.decode(data)
    except c.CommandInvalid:
        return None
    assert isinstance(command, c.Command)
    return command


def assert_well_formed(command: c.Command) -> None:
    """Everything the state machine relies on holds for a decoded command."""
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if f.type == "bool":
            assert type(value) is bool
        elif isinstance(value, int):
            assert not isinstance(value, bool) and 0 <= value <= INT64_MAX
        if isinstance(value, list):
            assert all(isinstance(item, str) for item in value)
    if isinstance(command, c.PutBlob):
        assert command.chunk_size > 0
        assert all(len(bytes.fromhex(chunk)) == 32 for chunk in command.chunks)


@settings(max_examples=500)
@given(data=GARBAGE)
def test_decoding_any_bytes_gives_a_command_or_refuses_it(data: bytes) -> None:
    command = decodes_or_refuses(data)
    if command is not None:
        assert_well_formed(command)
        assert c.decode(command.encode()) == command


@settings(max_examples=200)
@given(command=COMMAND)
def test_every_command_the_node_builds_decodes_to_itself(command: c.Command) -> None:
    assert c.decode(command.encode()) == command


def _body(**changes: Any) -> bytes:
    body = valid_body(c.PutBlob(repo="r", digest="sha256:" + "0" * 64, size=10, chunk_size=8,
                                chunks=["ab" * 32, "cd" * 32]))
    body.update(changes)
    return msgpack.packb({k: v for k, v in body.items() if v is not ...}, use_bin_type=True)


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb([1, 2, 3]),
        msgpack.packb("put_blob"),
        msgpack.packb(None),
        _body(type="no_such_command"),
        _body(type=["put_blob"]),
        _body(size=...),
        _body(extra="field"),
        _body(size=-1),
        _body(size=2**63),
        _body(size=True),
        _body(size=1.5),
        _body(chunk_size=0),
        _body(repo=b"r"),
        _body(repo="r" * 100_000),
        _body(chunks="ab" * 32),
        _body(chunks=[b"\xab" * 32]),
        _body(chunks=["not hex"]),
        _body(chunks=["AB" * 32]),
        _body(id=None),
    ],
    ids=lambda data: data[-40:].hex(),
)
def test_malformed_commands_are_refused(data: bytes) -> None:
    with pytest.raises(c.CommandInvalid):
        c.decode(data)


def test_optional_fields_may_be_none_and_nothing_else_wrong() -> None:
    put = c.PutManifest(repo="r", digest="sha256:" + "1" * 64, media_type="m", body=b"{}")
    assert c.decode(put.encode()) == put
    body = valid_body(put)
    body["annotations"] = {"k": 1}
    with pytest.raises(c.CommandInvalid):
        c.decode(msgpack.packb(body, use_bin_type=True))


def test_every_command_checks_exactly_its_fields() -> None:
    for kind, cls in c.COMMANDS.items():
        assert set(c.FIELD_CHECKS[kind]) == {f.name for f in dataclasses.fields(cls)}, kind


def open_machine(folder: Path) -> StateMachine:
    folder.mkdir(parents=True, exist_ok=True)
    return StateMachine(connect(folder / "state.sqlite"))


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=st.lists(st.tuples(st.booleans(), COMMAND, GARBAGE), max_size=20))
def test_garbage_entries_are_refused_alike_on_every_node_and_never_stop_it(
    tmp_path_factory: pytest.TempPathFactory, log: list[tuple[bool, c.Command, bytes]]
) -> None:
    entries: list[tuple[int, bytes | None]] = []
    garbage: set[int] = set()
    for index, (use_garbage, command, junk) in enumerate(log, 1):
        if use_garbage and decodes_or_refuses(junk) is None:
            entries.append((index, junk))
            garbage.add(index)
        else:
            entries.append((index, command.encode()))
    one = open_machine(tmp_path_factory.mktemp("one"))
    two = open_machine(tmp_path_factory.mktemp("two"))
    results = one.apply_batch(entries)
    assert two.apply_batch(entries) == results
    for (index, _), (_, result) in zip(entries, results, strict=True):
        if index in garbage:
            assert result.refusal is Refusal.COMMAND_INVALID
    assert one.applied_index == len(entries)
    assert dump(one) == dump(two)


def test_a_batch_with_a_map_of_the_wrong_shape_is_applied_around_it(tmp_path: Path) -> None:
    machine = open_machine(tmp_path)
    blob = c.PutBlob(repo="r", digest="sha256:" + hashlib.sha256(b"x").hexdigest(), size=0,
                     chunk_size=8, chunks=[])
    results = machine.apply_batch([
        (1, msgpack.packb([1, 2])),
        (2, _body(chunks=["not hex"])),
        (3, blob.encode()),
    ])
    assert [r.refusal for _, r in results] == [Refusal.COMMAND_INVALID] * 2 + [None]
    assert machine.applied_index == 3


class MachineWithAFaultyHandler(StateMachine):
    """A planted bug: one handler fails after writing, on whatever it is given."""

    def _apply_mount_blob(self, cmd: c.MountBlob) -> Any:
        self._link(cmd.repo, cmd.digest)
        raise ValueError("planted")


def test_a_command_its_handler_fails_on_is_refused_and_leaves_no_trace(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    machine = MachineWithAFaultyHandler(connect(tmp_path / "state.sqlite"))
    before = dump(machine)
    mount = c.MountBlob(repo="r", digest="sha256:" + "2" * 64)
    [(command_id, result)] = machine.apply_batch([(1, mount.encode())])
    assert command_id == mount.id
    assert result.refusal is Refusal.COMMAND_INVALID
    assert machine.applied_index == 1
    after = [row for row in dump(machine) if row not in before]
    assert all(row[0] != "r" for row in after)  # the link it wrote is gone


def test_drain_member_decodes_with_its_flag_and_refuses_a_flag_of_another_type() -> None:
    command = c.DrainMember(node_id="n2", draining=False)
    assert c.decode(command.encode()) == command
    body = valid_body(command)
    body["draining"] = 1  # msgpack's ints are not booleans: the flag must be one
    with pytest.raises(c.CommandInvalid, match="drain_member.draining"):
        c.decode(msgpack.packb(body, use_bin_type=True))


def test_an_entry_of_an_older_version_without_a_later_field_takes_its_default() -> None:
    """A field added to a command later has a default, so entries already in logs and
    snapshots still apply; a field without a default must be there."""
    body = valid_body(c.PutManifest(repo="a", digest="sha256:" + "0" * 64,
                                    media_type="m", body=b"{}"))
    del body["annotations"]
    decoded = c.decode(msgpack.packb(body, use_bin_type=True))
    assert isinstance(decoded, c.PutManifest) and decoded.annotations is None
    del body["repo"]
    with pytest.raises(c.CommandInvalid, match="repo"):
        c.decode(msgpack.packb(body, use_bin_type=True))
