"""`flotilla quota`: sizes read the way people write them, and mistakes caught before
any request is made."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from node.quota_cli import parse_size
from tests.conftest import ROOT


def test_sizes_read_binary_decimal_and_plain_bytes() -> None:
    assert parse_size("10GiB") == 10 << 30
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1.5g") == 3 << 29
    assert parse_size("4096") == parse_size("4096B") == 4096


@pytest.mark.parametrize("text", ["", "ten", "10XB", "-5MiB", "1e9"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_quota_set_without_a_cap_is_refused_before_any_request() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "quota", "set", "team",
         "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 2 and "--bytes, --repos or both" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "node.cli", "quota", "set", "team", "--bytes", "lots",
         "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert bad.returncode == 2 and "a size such as 10GiB" in bad.stderr
