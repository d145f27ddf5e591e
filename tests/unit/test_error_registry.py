"""Every error a lower layer can raise reaches the client as a named OCI error."""

from __future__ import annotations

import pytest

from consensus.engine import MembershipRefused, NoQuorum, Overloaded, Refusal, Refused
from node.api import errors
from node.cluster import errors as cluster
from node.storage import errors as storage


def _all_subclasses(base: type[Exception]) -> list[type[Exception]]:
    found, todo = [], [base]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


LOWER_LAYER_ERRORS = [
    *_all_subclasses(storage.StorageError),
    *_all_subclasses(cluster.ClusterError),
    NoQuorum,
    Overloaded,
    MembershipRefused,
]


@pytest.mark.parametrize("cls", LOWER_LAYER_ERRORS, ids=lambda cls: cls.__name__)
def test_every_lower_layer_error_has_an_entry_of_its_own(cls: type[Exception]) -> None:
    # Inheriting a base's mapping silently would turn a new error into a 500.
    assert cls in errors.DOMAIN_ERRORS, f"{cls.__name__} has no mapping in node/api/errors.py"
    mapped = errors.as_registry_error(cls("what went wrong"))
    assert mapped.code in errors.CODES


@pytest.mark.parametrize("refusal", list(Refusal), ids=lambda r: r.name)
def test_every_refusal_of_the_state_machine_has_a_client_error(refusal: Refusal) -> None:
    assert refusal in errors.REFUSALS, f"{refusal} has no mapping in node/api/errors.py"
    mapped = errors.as_registry_error(Refused(refusal, "detail"))
    assert mapped.detail == "detail"


def test_no_holder_reachable_is_503_unavailable() -> None:
    mapped = errors.as_registry_error(cluster.NoHolderReachable("gone", chunk="ab" * 32))
    assert (mapped.http_status, mapped.code) == (503, "UNAVAILABLE")
    assert mapped.detail == {"chunk": "ab" * 32}


@pytest.mark.parametrize("exc", [NoQuorum("no leader"), Overloaded("full")],
                         ids=["no-quorum", "raft-full"])
def test_a_cluster_that_cannot_take_writes_now_tells_clients_when_to_retry(
    exc: Exception,
) -> None:
    mapped = errors.as_registry_error(exc)
    assert (mapped.http_status, mapped.code) == (503, "UNAVAILABLE")
    assert mapped.headers["Retry-After"] == "1"


def test_an_upload_the_spool_does_not_know_is_blob_upload_unknown() -> None:
    mapped = errors.as_registry_error(storage.UploadUnknown(session="x"))
    assert (mapped.http_status, mapped.code) == (404, "BLOB_UPLOAD_UNKNOWN")


def test_a_second_class_claiming_a_code_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class AnotherBlobUnknown(errors.RegistryError):
            code, status, default_message = "BLOB_UNKNOWN", 404, "again"


def test_every_registered_code_has_one_status_class_and_a_message() -> None:
    for code, cls in errors.CODES.items():
        assert cls.code == code
        assert 400 <= cls.status < 600 and cls.default_message


def test_an_unexpected_exception_becomes_an_opaque_500() -> None:
    mapped = errors.as_registry_error(RuntimeError("secret internals"))
    assert (mapped.http_status, mapped.code) == (500, "UNKNOWN")
    assert "secret" not in mapped.message
