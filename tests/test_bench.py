"""Every benchmark runs: `python -m bench.<name> --smoke` for each runnable module of bench/.

The rule (bench/common.py): a module of bench/ with a `__main__` guard is a benchmark; it declares
`SMOKE`, the arguments of a tiny workload on its own code path, and ends through `bench.common.run`,
which exits non-zero on an exception or a noted problem (a non-2xx answer, a record not delivered).
The benchmarks' Redis is a database of the tests' own redis-server, never the machine's.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REDIS_URL, worker_number

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = 14 - worker_number()  # the benchmarks flush their database: one the tests never use


def runnable(path: Path) -> bool:
    """True for a module with an `if __name__ == "__main__":` guard."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def declares_smoke(path: Path) -> bool:
    """True when the module assigns SMOKE at its top level."""
    return any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SMOKE" for t in node.targets)
        for node in ast.parse(path.read_text()).body
    )


BENCHES = sorted(path.stem for path in (ROOT / "bench").glob("*.py") if runnable(ROOT / "bench" / path.name))


def test_every_runnable_bench_declares_its_smoke_run() -> None:
    """A benchmark without SMOKE could break unnoticed: each runnable module of bench/ declares one."""
    assert "delivery" in BENCHES
    missing = [name for name in BENCHES if not declares_smoke(ROOT / "bench" / f"{name}.py")]
    assert missing == []


@pytest.mark.e2e
@pytest.mark.parametrize("name", BENCHES)
def test_bench_smoke_run_succeeds(name: str) -> None:
    """`python -m bench.<name> --smoke` exits 0: no exception, no non-2xx answer, nothing undelivered."""
    env = {**os.environ, "BENCH_REDIS_URL": f"{REDIS_URL.rsplit('/', 1)[0]}/{BENCH_DB}"}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode and "apt-get install -y wrk" in done.stderr and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/test installs it where apt-get may)")
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
