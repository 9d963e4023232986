"""`scripts/test`, the test command: the suite runs on a Redis of its own, and nothing is installed
without a word first."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import pytest
import redis

from tests.processes import ROOT

MACHINE_REDIS_PORT = 6379  # where other programs' Redis answers on a developer's machine
INSTALL = re.compile(r"\b(?:apt-get|pip) install\b")


def test_the_suite_empties_a_redis_of_its_own(redis_client: redis.Redis) -> None:
    """The Redis the tests empty does not listen on port 6379 (scripts/test starts one on a free port),
    unless RELAY_TEST_REDIS_URL names one there on purpose. The server itself says its port."""
    named = os.environ.get("RELAY_TEST_REDIS_URL", "")
    if named and (urlsplit(named).port or MACHINE_REDIS_PORT) == MACHINE_REDIS_PORT:
        pytest.skip("RELAY_TEST_REDIS_URL names a Redis on port 6379 on purpose")
    port = redis_client.info("server")["tcp_port"]
    assert port != MACHINE_REDIS_PORT, "the tests use (and empty) the Redis on port 6379: run scripts/test"


def test_every_install_is_announced_before_it_runs() -> None:
    """Each `apt-get install` and `pip install` line of scripts/test follows, within two lines, a line
    that prints what it installs."""
    lines = (ROOT / "scripts" / "test").read_text().splitlines()
    installs = [number for number, line in enumerate(lines) if INSTALL.search(line) and "echo" not in line]
    assert len(installs) >= 2, "the install lines were not found"
    for number in installs:
        before = lines[max(0, number - 2) : number]
        said = [line for line in before if 'echo "==> ' in line and "install" in line]
        assert said, f"scripts/test installs without saying so first: {lines[number].strip()}"
