"""Redis outages are ridden out (docs/operations.md, "Redis"), with web and workers left alone: the real Redis
SIGKILLed under load and restarted from its AOF, and a Redis that answers but refuses for a while:
full under noeviction (OOM), read-only after a failover (READONLY), busy with a script (BUSY),
loading its dataset (LOADING).

While Redis is away or refusing the web answers 503 (nothing stored), the workers wait; once it is
back every record acknowledged with a 2xx reaches Braze, every relay process is still running, and
each worker said once that Redis went away (naming the refusal, where the test makes one) and once
that it came back, without a traceback.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from braze_sim.server import Simulator
from tests.helpers import PostbackLoad
from tests.processes import RedisServer, redis_version, running_stack, wait_for

AOF = ("--appendonly", "yes", "--appendfsync", "always")
USERS = 20
ROLES = ("worker", "worker", "consent")
FAILOVER_ERRORS = ("READONLY", "UNBLOCKED")


def lines_of(log_dir: Path, role: str) -> list[dict[str, object]]:
    """Every JSON line the processes of a role printed."""
    lines = []
    for path in sorted(log_dir.glob(f"{role}-*.log")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def said_by(log_dir: Path, role: str, pid: int) -> list[dict[str, object]]:
    """The JSON lines one process printed."""
    return [line for line in lines_of(log_dir, role) if line.get("pid") == pid]


def losses(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    """The lines saying Redis went away."""
    return [line for line in lines if str(line["msg"]).startswith("redis unavailable")]


def backs(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    """The lines saying Redis is back."""
    return [line for line in lines if line["msg"] == "redis available again"]


def ride_out(
    own_redis: Callable[..., RedisServer],
    braze: Simulator,
    routes_file: Path,
    log_dir: Path,
    *,
    trouble: Callable[[RedisServer], None],
    cure: Callable[[RedisServer], None],
    met: tuple[str, ...] = (),
    options: tuple[str, ...] = AOF,
) -> None:
    """Make `trouble` under load, then `cure` it, and check the promises.

    With `met` (Redis error codes), the cure waits until every worker has said Redis went away, each
    with one of those errors: the workers met the refusal, and must outlive it. After the cure, the
    web stores again and every worker says Redis is back before anything is counted.
    """
    server = own_redis(*options)
    with running_stack(log_dir, routes_file, braze, server.url) as (procs, base):
        workers = [procs.start(role) for role in ROLES]
        load = PostbackLoad(base, "outage", USERS)
        load.start()
        wait_for(lambda: len(load.acknowledged) >= 300, 30, "postbacks before the trouble")
        trouble(server)
        if met:
            wait_for(
                lambda: all(
                    losses(said_by(log_dir, role, proc.pid))
                    for role, proc in zip(ROLES, workers, strict=True)
                ),
                60,
                f"every worker to meet {met}",
            )
        cure(server)
        cured = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) >= cured + 300, 60, "postbacks acknowledged after it")
        wait_for(
            lambda: all(
                backs(said_by(log_dir, role, proc.pid)) for role, proc in zip(ROLES, workers, strict=True)
            ),
            60,
            "every worker to say Redis is back",
        )
        load.stopping.set()
        load.join(timeout=20)
        try:
            wait_for(
                lambda: load.acknowledged.keys() <= load.delivered(braze),
                90,
                "every acknowledged record in Braze",
            )
        except AssertionError:
            missing = sorted(load.acknowledged.keys() - load.delivered(braze))
            raise AssertionError(
                f"{len(missing)} acknowledged records not in Braze, e.g. {missing[:10]}"
            ) from None
        assert all(proc.poll() is None for proc in procs.running), "a relay process exited"
        assert load.refused > 0, "the web answered 503 while Redis was away"
        assert not load.unexpected, f"answers other than 200 and 503: {load.unexpected[:10]}"
        for role, proc in zip(ROLES, workers, strict=True):
            said = said_by(log_dir, role, proc.pid)
            messages = [str(line["msg"]) for line in said]
            assert len(losses(said)) == 1, messages
            assert len(backs(said)) == 1, messages
            if met:
                assert losses(said)[0]["error"] in met, losses(said)
            assert not [line for line in said if "Traceback" in json.dumps(line)], "a traceback in its log"
            assert not [line for line in said if line["level"] in ("error", "critical")], messages


def client_of(server: RedisServer) -> redis.Redis:
    """A client of the test's own on that server."""
    return redis.Redis(port=server.port)


def redis_cli(server: RedisServer, *command: str) -> subprocess.Popen[str]:
    """A command that blocks Redis, sent once by redis-cli, which waits for it without a time-out.

    Not redis-py: it gives up on an answer after 5 s and sends the command again, and a second
    DEBUG RELOAD while the first loads saves what is loaded so far (Redis then crashes).
    """
    return subprocess.Popen(
        ["redis-cli", "-p", str(server.port), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def restart_after(outage_s: float) -> tuple[Callable[[RedisServer], None], Callable[[RedisServer], None]]:
    """SIGKILL, then a restart from the AOF `outage_s` later."""

    def trouble(server: RedisServer) -> None:
        server.kill()
        time.sleep(outage_s)

    return trouble, lambda server: server.start()


@pytest.mark.e2e
def test_workers_ride_out_a_redis_restart(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """Redis SIGKILLed and restarted 3 s later: nothing acknowledged is lost, no process exits."""
    trouble, cure = restart_after(3)
    ride_out(own_redis, braze, routes_file, tmp_path, trouble=trouble, cure=cure)


@pytest.mark.e2e
def test_workers_ride_out_a_30_second_outage(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """The same with Redis away for 30 s (longer than a lease and RQ's reconnection backoff)."""
    trouble, cure = restart_after(30)
    ride_out(own_redis, braze, routes_file, tmp_path, trouble=trouble, cure=cure)


@pytest.mark.e2e
def test_workers_ride_out_a_full_redis(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """maxmemory set below what Redis holds (noeviction: every write refused with OOM) while the
    workers drain, then raised: they wait, keep running, and deliver every acknowledged record."""

    def fill(server: RedisServer) -> None:
        client = client_of(server)
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)

    def free(server: RedisServer) -> None:
        client_of(server).config_set("maxmemory", 0)

    ride_out(own_redis, braze, routes_file, tmp_path, trouble=fill, cure=free, met=("OOM",))


@pytest.mark.e2e
def test_workers_ride_out_a_failover_that_makes_their_redis_a_replica(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """A coordinated FAILOVER to a second redis-server makes the relay's Redis a replica (READONLY;
    RQ's waiting BLPOP is woken with UNBLOCKED), then REPLICAOF NO ONE makes it the master again:
    ridden out, nothing acknowledged is lost."""
    other = own_redis()

    def demote(server: RedisServer) -> None:
        replica = client_of(other)
        replica.replicaof("127.0.0.1", server.port)
        wait_for(
            lambda: replica.info("replication").get("master_link_status") == "up", 30, "the replica to sync"
        )
        relay_redis = client_of(server)
        relay_redis.execute_command("FAILOVER")
        wait_for(
            lambda: relay_redis.info("replication")["role"] == "slave",
            30,
            "the relay's Redis to be a replica",
        )

    def promote(server: RedisServer) -> None:
        client_of(server).replicaof("NO", "ONE")

    ride_out(own_redis, braze, routes_file, tmp_path, trouble=demote, cure=promote, met=FAILOVER_ERRORS)


@pytest.mark.e2e
def test_workers_ride_out_a_busy_script(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """A Lua script that spins (Redis answers BUSY to everyone else), then SCRIPT KILL: ridden out."""
    spinning: list[subprocess.Popen[str]] = []

    def spin(server: RedisServer) -> None:
        spinning.append(redis_cli(server, "EVAL", "while true do end", "0"))

    def kill(server: RedisServer) -> None:
        client_of(server).script_kill()
        output, _ = spinning[0].communicate(timeout=30)
        assert "killed" in output

    options = (*AOF, "--lua-time-limit", "100")  # BUSY after 100 ms of script, not 5 s
    ride_out(own_redis, braze, routes_file, tmp_path, trouble=spin, cure=kill, met=("BUSY",), options=options)


@pytest.mark.e2e
def test_workers_ride_out_redis_loading_its_dataset(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """DEBUG RELOAD of a dataset made slow to load: Redis answers LOADING for longer than redis-py
    retries a command (about 5 s), then has every record back: ridden out, nothing lost."""
    reloading: list[subprocess.Popen[str]] = []

    def reload(server: RedisServer) -> None:
        client = client_of(server)
        # 20 MB, saved uncompressed: Redis answers LOADING each 2 MB it loads, about once a second
        # at 500 µs a key, for 10 s.
        client.execute_command("DEBUG", "POPULATE", 20_000, "filler", 1000)
        client.config_set("rdbcompression", "no")
        client.config_set("key-load-delay", 500)
        reloading.append(redis_cli(server, "DEBUG", "RELOAD"))

    def loaded(server: RedisServer) -> None:
        output, _ = reloading[0].communicate(timeout=120)
        assert output.strip() == "OK", output
        assert client_of(server).dbsize() >= 20_000  # every key is back (the relay's among them)

    debug = ("--enable-debug-command", "local") if redis_version() >= (7,) else ()  # on before 7
    options = (*AOF, *debug)
    ride_out(
        own_redis,
        braze,
        routes_file,
        tmp_path,
        trouble=reload,
        cure=loaded,
        met=("LOADING",),
        options=options,
    )
