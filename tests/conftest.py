"""Options and fixtures shared by every test folder."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seeds",
        type=int,
        default=2000,
        help="how many seeded clusters the Raft simulator runs",
    )
