"""The suite's log scan: no password, token or secret may appear in any log line.

Tests and fixtures record every credential they make or receive in one
registry (`secrets_seen.add(value)`, the fixture, or `record_secret(value)`
from anywhere); the places inside this process that draw credentials (the
token issuer, the robot token generator, the password hasher) record theirs
on their own, and every cluster secret file found beside the logs (a file
named `secret`) is read into the registry before those logs are scanned.
What is scanned: every log record formatted in this process (in-process
nodes; a handler on the root logger for the whole session), and every log
file (`*.log`, `audit.log.N`) under each test's tmp_path when the test ends
(before an API test's tmpfs folder is removed), then whatever is left under
the session's base temp directory at the end. Any recorded secret found in
any line fails the session and names the file and line, never the secret.

Each test's lines are scanned at its end and then dropped, and a file is read
again only when it changed, so the scan costs little: one substring search
per recorded secret over the text one test wrote.
"""

from __future__ import annotations

import base64
import functools
import importlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

MIN_SECRET = 8  # shorter values would match ordinary words; no test credential is shorter
LOG_FILE = re.compile(r".*\.log(\.\d+)?")
SECRET_FILE = "secret"
PROJECT_LOGGERS = ("node", "consensus", "flotilla", "scripts")
MAX_SECRET_FILE = 4096


def _hint(secret: str) -> str:
    """How a finding names a secret without repeating it."""
    return f"{secret[:3]}… ({len(secret)} characters)"


class SecretsSeen:
    """Every credential the suite made or received, with the encodings a leak could take
    (an Authorization header's base64, a form's or URL's percent-encoding)."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str | bytes | None) -> Any:
        """Record `value` (bytes are recorded as their hex, as secret files hold them);
        returns it, so `token = secrets_seen.add(response.json()["token"])` reads well."""
        if value is None:
            return value
        text = value.hex() if isinstance(value, bytes) else str(value)
        for form in {text, quote(text, safe=""), quote_plus(text)}:
            if len(form) >= MIN_SECRET:
                self._values.add(form)
        return value

    def add_login(self, name: str, password: str) -> str:
        """A password and the Basic credentials it travels in; returns the password."""
        self.add(password)
        self.add(base64.b64encode(f"{name}:{password}".encode()).decode())
        return password

    def add_secret_file(self, path: Path) -> None:
        try:
            if path.stat().st_size <= MAX_SECRET_FILE:
                self.add(path.read_text(errors="replace").strip())
        except OSError:
            pass

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def found_in(self, text: str) -> list[str]:
        """The recorded secrets that occur in `text`."""
        return [secret for secret in self._values if secret in text]


SECRETS = SecretsSeen()


def record_secret(value: str | bytes | None) -> Any:
    """Record a credential for the log scan, from code that has no fixture at hand."""
    return SECRETS.add(value)


@dataclass(frozen=True)
class Finding:
    where: str  # file:line, or the logger of an in-process record
    secret: str

    def __str__(self) -> str:
        return f"{self.where}: a recorded secret, {_hint(self.secret)}"


class KeptLines(logging.Handler):
    """Every record this process logs, formatted, until the scan takes them."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not this handler's business
            self.handleError(record)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class LogScan:
    """Finds recorded secrets in log lines and log files; remembers what it found."""

    def __init__(self, secrets: SecretsSeen) -> None:
        self.secrets = secrets
        self.findings: list[Finding] = []
        self._scanned: dict[Path, tuple[int, int]] = {}  # path → (size, mtime) when read
        self.characters = 0  # how much text was searched, and for how long: the scan's cost
        self.seconds = 0.0

    def _found_in(self, text: str) -> list[str]:
        started = time.perf_counter()
        found = self.secrets.found_in(text)
        self.seconds += time.perf_counter() - started
        self.characters += len(text)
        return found

    def scan_lines(self, lines: Iterable[str], where: str) -> None:
        lines = list(lines)
        found = self._found_in("\n".join(lines))
        for secret in found:
            for number, line in enumerate(lines, 1):
                if secret in line:
                    self.findings.append(Finding(f"{where} (record {number}: "
                                                 f"{line.split(' ', 1)[0]})", secret))
                    break

    def scan_file(self, path: Path) -> None:
        try:
            stat = path.stat()
            if self._scanned.get(path) == (stat.st_size, stat.st_mtime_ns):
                return
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self._scanned[path] = (stat.st_size, stat.st_mtime_ns)
        for secret in self._found_in(text):
            for number, line in enumerate(text.splitlines(), 1):
                if secret in line:
                    self.findings.append(Finding(f"{path}:{number}", secret))
                    break

    def scan_tree(self, root: Path) -> None:
        """Every log file under `root`, after reading the secret files found there."""
        if not root.is_dir():
            return
        logs = []
        for path in root.rglob("*"):
            if path.name == SECRET_FILE and path.is_file():
                self.secrets.add_secret_file(path)
            elif LOG_FILE.fullmatch(path.name) and path.is_file():
                logs.append(path)
        for path in logs:
            self.scan_file(path)


# Where credentials are drawn in this process, by the module attribute callers reach
# them through: (module, function, what of the call to record).
def _result(args: tuple[Any, ...], result: Any) -> Any:
    return result


def _first_argument(args: tuple[Any, ...], result: Any) -> Any:
    return args[0] if args else None


SOURCES: list[tuple[str, str, Callable[[tuple[Any, ...], Any], Any]]] = [
    ("node.access.gate", "issue", _result),  # access and refresh tokens
    ("node.access.passwords", "new_robot_token", _result),
    ("node.api.admin", "new_robot_token", _result),
    ("node.access.passwords", "hash_password", _first_argument),
    ("node.access_cli", "hash_password", _first_argument),
]


def record_where_credentials_are_drawn(secrets: SecretsSeen) -> list[str]:
    """Wrap each of SOURCES so what it draws is recorded; returns the ones wrapped."""
    wrapped = []
    for module_name, attribute, pick in SOURCES:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute, None)
        if original is None or getattr(original, "_records_secrets", False):
            continue

        def recording(*args: Any, __original: Any = original, __pick: Any = pick,
                      **kwargs: Any) -> Any:
            result = __original(*args, **kwargs)
            secrets.add(__pick(args, result))
            return result

        functools.update_wrapper(recording, original)
        recording._records_secrets = True  # type: ignore[attr-defined]
        setattr(module, attribute, recording)
        wrapped.append(f"{module_name}.{attribute}")
    return wrapped


_kept = KeptLines()
_scan = LogScan(SECRETS)


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_kept)
    # A node logs at info in production: records below that are never written there, and
    # the project's records at info must be seen here too (the root logger's warning
    # would drop them before any handler); other libraries keep their levels.
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    record_where_credentials_are_drawn(SECRETS)


@pytest.fixture
def secrets_seen() -> SecretsSeen:
    """The registry of credentials the log scan looks for: `secrets_seen.add(value)`."""
    return SECRETS


@pytest.fixture(autouse=True)
def _scan_this_tests_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    # Requested here, tmp_path outlives this fixture: its files are still there at the scan.
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        _scan.scan_tree(Path(tmp))
    _scan.scan_lines(_kept.take(), f"log records of {request.node.nodeid}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        try:
            _scan.scan_tree(factory.getbasetemp())
        except OSError:
            pass
    _scan.scan_lines(_kept.take(), "log records outside any test")
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller reports for it
        workeroutput["secret_findings"] = [str(f) for f in _scan.findings]
    if _scan.findings or _relayed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# What the workers of a parallel run found (their scans run in their own processes).
_relayed: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    _relayed.extend(getattr(node, "workeroutput", {}).get("secret_findings", ()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _relayed:
        terminalreporter.section("secrets in logs", sep="=", red=True, bold=True)
        for finding in _relayed:
            terminalreporter.line(finding, red=True)
    if not _scan.findings:
        if terminalreporter.config.option.verbose > 0:
            terminalreporter.line(
                f"log scan: {len(SECRETS)} recorded secrets, {len(_scan._scanned)} log files, "
                f"{_scan.characters / 1e6:.1f} M characters searched in {_scan.seconds:.2f} s"
            )
        return
    terminalreporter.section("secrets in logs", sep="=", red=True, bold=True)
    for finding in _scan.findings:
        terminalreporter.line(str(finding), red=True)
