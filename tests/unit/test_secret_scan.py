"""The suite's log scan catches a planted secret, wherever it is written."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.access import gate, passwords
from node.access.tokens import ACCESS, SigningKeyView, TokenClaims, new_signing_key
from tests.conftest import ROOT
from tests.secret_scan import KeptLines, LogScan, SecretsSeen


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A folder outside tmp_path: the suite's own scan would rightly flag what is planted
    there."""
    folder = Path(tempfile.mkdtemp(prefix="flotilla-scan-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def planted() -> str:
    return "planted-" + secrets.token_urlsafe(16)


def test_a_secret_in_a_log_record_is_found_and_named_without_repeating_it() -> None:
    seen = SecretsSeen()
    secret = seen.add(planted())
    kept = KeptLines()
    logger = logging.getLogger("flotilla.test.secret_scan")
    logger.addHandler(kept)
    try:
        logger.warning("nothing to see")
        logger.warning("login of %s with %s", "alice", secret)
    finally:
        logger.removeHandler(kept)
    scan = LogScan(seen)
    scan.scan_lines(kept.take(), "records")
    [finding] = scan.findings
    assert "record 2" in str(finding) and "flotilla.test.secret_scan" in str(finding)
    assert secret not in str(finding)


def test_basic_credentials_are_found_in_their_base64_form(tmp_path: Path) -> None:
    seen = SecretsSeen()
    password = seen.add_login("alice", planted())
    header = base64.b64encode(f"alice:{password}".encode()).decode()
    (tmp_path / "node.log").write_text(f"ok\nGET /v2/ Authorization: Basic {header}\n")
    scan = LogScan(seen)
    scan.scan_tree(tmp_path)
    assert [f.where for f in scan.findings] == [f"{tmp_path / 'node.log'}:2"]


def test_a_cluster_secret_file_beside_the_logs_is_looked_for_in_them(elsewhere: Path) -> None:
    secret = secrets.token_hex(32)
    (elsewhere / "secret").write_text(secret + "\n")
    audit = elsewhere / "n1" / "audit.log.1"
    audit.parent.mkdir()
    audit.write_text('{"action": "push"}\n{"action": "x", "why": "' + secret + '"}\n')
    scan = LogScan(SecretsSeen())
    scan.scan_tree(elsewhere)
    assert [f.where for f in scan.findings] == [f"{audit}:2"]


def test_clean_logs_and_unchanged_files_give_no_finding(tmp_path: Path) -> None:
    seen = SecretsSeen()
    seen.add(planted())
    (tmp_path / "node.log").write_text("GET /v2/ 200\n")
    scan = LogScan(seen)
    scan.scan_tree(tmp_path)
    scan.scan_tree(tmp_path)
    scan.scan_lines(["flotilla INFO started"], "records")
    assert scan.findings == []


def test_tokens_and_passwords_drawn_in_this_process_are_recorded_on_their_own(
    secrets_seen: SecretsSeen,
) -> None:
    kid, pem = new_signing_key()
    key = SigningKeyView.load(kid, pem, None)
    token = gate.issue(key, TokenClaims(ACCESS, "alice", 2_000_000_000, 1_000_000_000, {}),
                       service="flotilla")
    password = planted()
    passwords.hash_password(password)
    robot = passwords.new_robot_token()
    recorded = set(secrets_seen)
    assert {token, password, robot} <= recorded


def test_a_session_whose_log_holds_a_recorded_secret_fails(elsewhere: Path) -> None:
    (elsewhere / "test_leak.py").write_text(textwrap.dedent("""
        import logging

        def test_leaks(secrets_seen, tmp_path):
            password = secrets_seen.add("hunter2-but-longer")
            logging.getLogger("flotilla.leaky").info("the password is %s", password)

        def test_leaks_into_a_file(tmp_path):
            from tests.secret_scan import record_secret
            (tmp_path / "n1.log").write_text("token " + record_secret("a-token-of-some-length"))

        def test_clean(secrets_seen):
            logging.getLogger("flotilla.tidy").info("nothing secret here")
    """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.secret_scan", "-p", "no:cacheprovider",
         "--rootdir", str(elsewhere), "--basetemp", str(elsewhere / "tmp"), "-q",
         str(elsewhere / "test_leak.py")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    assert "secrets in logs" in run.stdout
    assert "log records of test_leak.py::test_leaks (record" in run.stdout
    assert "n1.log:1" in run.stdout
    assert "hunter2-but-longer" not in run.stdout and "a-token-of-some-length" not in run.stdout
