"""A Sentinel failover under load (docs/operations.md, "Redis"): a primary, a replica and three Sentinels
as real processes, the relay finding the primary through them (REDIS_SENTINELS), one-record postbacks
at a steady pace, the primary SIGKILLed. The web answers 503 until the replica is promoted, the
workers follow it; no relay process exits. With RELAY_REDIS_MIN_REPLICAS=1 every record answered 2xx
reaches Braze; with 0 the only records lost are some answered in the last moment before the kill,
as the operations guide says.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from braze_sim.server import Simulator
from tests.helpers import PostbackLoad, lanes_idle
from tests.processes import RedisServer, free_port, running_stack, wait_for

SERVICE = "relay-primary"
USERS = 20
ROLES = ("worker", "consent")
REPLICATOR, REPLICATOR_PASSWORD = "replicator", "replicator-secret"  # the replica's ACL user
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


class Sentinels:
    """Three redis-server processes in Sentinel mode watching one primary, on free loopback ports."""

    def __init__(self, data_dir: Path, primary: RedisServer) -> None:
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        data_dir.mkdir(parents=True, exist_ok=True)
        for port in self.ports:
            config = data_dir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {data_dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            self.procs.append(
                subprocess.Popen(
                    ["redis-server", str(config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self.clients = [
            redis.Redis(port=port, socket_timeout=2, decode_responses=True) for port in self.ports
        ]

    @property
    def setting(self) -> str:
        """REDIS_SENTINELS for them."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def _master(self, client: redis.Redis) -> dict[str, str]:
        """What one Sentinel says about the service (empty while it does not answer)."""
        try:
            return dict(client.sentinel_master(SERVICE))
        except redis.RedisError:
            return {}

    def ready(self) -> bool:
        """Every Sentinel knows the other two and the replica."""
        return all(
            int(found.get("num-other-sentinels", 0)) == 2 and int(found.get("num-slaves", 0)) == 1
            for found in map(self._master, self.clients)
        )

    def primary_port(self) -> int | None:
        """The primary's port as every Sentinel names it (None while they disagree or cannot say)."""
        named = {int(found["port"]) if found else None for found in map(self._master, self.clients)}
        return named.pop() if len(named) == 1 else None

    def stop(self) -> None:
        """Stop them."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


def cut_replication(primary: RedisServer) -> None:
    """The primary's replication link cut, and its replica kept from connecting again."""
    client = redis.Redis(port=primary.port)
    client.acl_setuser(REPLICATOR, enabled=False)
    client.client_kill_filter(_type="slave")
    wait_for(lambda: client.info("replication")["connected_slaves"] == 0, 10, "the replica to be cut off")


def fail_over(
    own_redis: Callable[..., RedisServer],
    braze: Simulator,
    routes_file: Path,
    log_dir: Path,
    min_replicas: int,
) -> tuple[PostbackLoad, tuple[float, float]]:
    """Run the load through a failover; return it (stopped, everything it can get delivered),
    when the replica began to lag behind the primary, and when that was killed."""
    primary = own_redis(*AOF)
    redis.Redis(port=primary.port).acl_setuser(
        REPLICATOR,
        enabled=True,
        passwords=[f"+{REPLICATOR_PASSWORD}"],
        commands=["+psync", "+replconf", "+ping"],
    )
    replica = own_redis(
        *AOF,
        *("--masteruser", REPLICATOR, "--masterauth", REPLICATOR_PASSWORD),
        *("--replicaof", "127.0.0.1", str(primary.port)),
    )
    sentinels = Sentinels(log_dir / "sentinels", primary)
    try:
        wait_for(sentinels.ready, 30, "the Sentinels to know each other and the replica")
        settings = {
            "REDIS_URL": "",
            "REDIS_SENTINELS": sentinels.setting,
            "REDIS_SENTINEL_SERVICE": SERVICE,
            "RELAY_REDIS_MIN_REPLICAS": str(min_replicas),
        }
        with running_stack(log_dir, routes_file, braze, **settings) as (procs, base):
            workers = [procs.start(role) for role in ROLES]
            load = PostbackLoad(base, "failover", USERS)
            load.start()
            wait_for(lambda: len(load.acknowledged) >= 100, 30, "postbacks before the failover")
            # The replica falls behind: its link is cut and it cannot come back (its user is turned
            # off), so what the primary takes now is on no replica, as in the moment of lag before a
            # primary dies. The workers are held (SIGSTOP), so those records are still queued, as in
            # a backlog. A few answers later the primary is killed.
            for proc in workers:
                proc.send_signal(signal.SIGSTOP)
            lagging = time.monotonic()  # from the moment the cut begins (its checks take a while)
            cut_replication(primary)
            answered = load.answered()
            wait_for(lambda: load.answered() >= answered + 4, 30, "answers while the replica lags")
            primary.kill()
            killed = time.monotonic()
            for proc in workers:
                proc.send_signal(signal.SIGCONT)
            wait_for(
                lambda: sentinels.primary_port() == replica.port, 30, "the Sentinels to promote the replica"
            )
            # The lost box comes back and follows the new primary (as an operator or Sentinel would
            # make it): with one replica asked for, 2xx answers resume once it has synced.
            primary.options = (*primary.options, "--replicaof", "127.0.0.1", str(replica.port))
            primary.start()
            cured = len(load.acknowledged)
            wait_for(lambda: len(load.acknowledged) >= cured + 100, 60, "postbacks acknowledged after it")
            load.stopping.set()
            load.join(timeout=40)
            settled = redis.Redis(port=replica.port)
            wait_for(lambda: lanes_idle(settled), 60, "the lanes of the new primary to empty")
            assert all(proc.poll() is None for proc in procs.running), "a relay process exited"
            for proc in workers:  # an idle worker on Sentinel stops at once when asked (warm shutdown)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
            assert load.refused > 0, "the web answered 503 while there was no primary"
            assert not load.unexpected, f"answers other than 200 and 503: {load.unexpected[:10]}"
            assert "Traceback" not in procs.logs()
            return load, (lagging, killed)
    finally:
        sentinels.stop()


@pytest.mark.e2e
def test_with_a_replica_asked_for_every_acknowledged_record_survives_the_failover(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """RELAY_REDIS_MIN_REPLICAS=1: the primary SIGKILLed under load, every record answered 2xx (before
    and after) is delivered."""
    load, _ = fail_over(own_redis, braze, routes_file, tmp_path, min_replicas=1)
    missing = sorted(set(load.acknowledged) - load.delivered(braze))
    print(f"acknowledged {len(load.acknowledged)}, refused {load.refused}, lost {len(missing)}")
    assert not missing, f"{len(missing)} acknowledged records not in Braze, e.g. {missing[:10]}"


@pytest.mark.e2e
def test_without_replicas_asked_for_only_the_last_moment_can_be_lost(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """RELAY_REDIS_MIN_REPLICAS=0: what the failover loses is at most the records answered 2xx while the
    replica lagged, in the last moment before the primary died (the count is printed); none from before."""
    load, (lagging, killed) = fail_over(own_redis, braze, routes_file, tmp_path, min_replicas=0)
    missing = sorted(set(load.acknowledged) - load.delivered(braze))
    # Under way at some moment between the cut and the kill: answered after the cut began, sent before
    # the kill (a 2xx that came after the kill was stored before it, on the primary that died).
    times = load.acknowledged.items()
    last_moment = [seq for seq, (sent, came) in times if came >= lagging and sent <= killed]
    assert missing, "records answered while the replica lagged and not delivered were lost"
    print(f"acknowledged {len(load.acknowledged)}, while lagging {len(last_moment)}, lost {len(missing)}")
    assert set(missing) <= set(last_moment), f"lost records answered before the last moment: {missing[:10]}"
