"""Workspaces on a Redis of their own (relay/redises.py): a route's `redis_url_env` places its workspace's
records, drain jobs, rate limits, dead letters and metrics on that Redis.

The routes file names one Redis per workspace or stops the boot naming the routes that split one; the
edge stores each route's records on its workspace's Redis; one Redis down answers 503 for its
workspace's routes only, /readyz names it, /metrics shows it down; the workers (one process per Redis,
as the Procfile starts them) keep delivering the others, and the stopped one's records once it is back.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay import redises, store
from relay.config import load_settings
from relay.errors import ConfigError
from tests.helpers import ADMIN_KEY, BRAZE_KEY, WRITE_KEY, create_app_for
from tests.processes import Processes, RedisServer, free_port, refused_start, running_stack, wait_for
from tests.test_config import config_error
from tests.test_failover import SERVICE, Sentinels
from tests.test_redis_check import EVICTING, environ_for, web_command

AOF = ("--appendonly", "yes", "--appendfsync", "always")  # a stopped Redis comes back with every record


def two_workspaces(endpoint: str, a_env: str | None = None, b_env: str | None = "BRAND_B_REDIS_URL") -> str:
    """Route `a` in the default workspace, `b` and `b_consent` in brand B's (its own Braze key)."""
    a_redis = f'redis_url_env = "{a_env}"\n' if a_env else ""
    b_redis = f'redis_url_env = "{b_env}"\n' if b_env else ""
    brand_b = f'braze_endpoint = "{endpoint}"\nbraze_api_key_env = "BRAND_B_BRAZE_KEY"\n'
    return (
        '[routes.a]\ndatabase = "a"\ntable = "events"\nmode = "user_track"\n'
        f'track_record_type = "custom_events"\nskip_on_invalid_records = true\n{a_redis}\n'
        '[routes.b]\ndatabase = "b"\ntable = "events"\nmode = "user_track"\n'
        f'track_record_type = "custom_events"\nskip_on_invalid_records = true\n{brand_b}{b_redis}\n'
        f'[routes.b_consent]\nmode = "user_subscription"\n{brand_b}{b_redis}'
    )


@pytest.fixture
def placed_env(config_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """config_env with brand B's Braze key and Redis URL set."""
    config_env.setenv("BRAND_B_BRAZE_KEY", BRAZE_KEY)
    config_env.setenv("BRAND_B_REDIS_URL", "redis://127.0.0.1:1/0")
    config_env.setenv("REDIS_URL", "redis://127.0.0.1:2/0")
    return config_env


def test_a_workspace_on_its_own_redis_is_placed_there(
    placed_env: pytest.MonkeyPatch, routes_path: Path
) -> None:
    """Every route of brand B names BRAND_B_REDIS_URL: its workspace lives there, the default on REDIS_URL."""
    routes_path.write_text(two_workspaces("https://rest.fra-01.braze.eu"))
    settings = load_settings()
    b = settings.routes["b"].workspace
    assert settings.workspaces[b].redis_env == "BRAND_B_REDIS_URL"
    assert "127.0.0.1:1" not in repr(settings.workspaces[b]), "the URL may hold a password"
    found = redises.servers(settings)
    assert [(server.name, server.workspaces) for server in found] == [
        ("REDIS_URL", ("default",)),
        ("BRAND_B_REDIS_URL", (b,)),
    ]
    brand_b = redises.only(settings, found[1])
    assert sorted(brand_b.routes) == ["b", "b_consent"] and list(brand_b.workspaces) == [b]
    assert redises.named(settings, "BRAND_B_REDIS_URL") == found[1]
    with pytest.raises(
        ConfigError, match=r"RELAY_WORKER_REDIS=OTHER names no Redis.*REDIS_URL, BRAND_B_REDIS_URL"
    ):
        redises.named(settings, "OTHER")


def test_variables_holding_one_url_share_one_redis(placed_env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """Two names for REDIS_URL's own URL: one Redis, one client."""
    placed_env.setenv("BRAND_B_REDIS_URL", "redis://127.0.0.1:2/0")
    routes_path.write_text(two_workspaces("https://rest.fra-01.braze.eu"))
    assert [server.name for server in redises.servers(load_settings())] == ["REDIS_URL"]


@pytest.mark.parametrize(
    ("a_env", "b_consent_env", "named"),
    [
        (None, "OTHER_REDIS_URL", "'b' (BRAND_B_REDIS_URL) and 'b_consent' (OTHER_REDIS_URL)"),
        (None, None, "'b' (BRAND_B_REDIS_URL) and 'b_consent' (none)"),
    ],
)
def test_a_routes_file_that_splits_a_workspace_stops_the_boot(
    placed_env: pytest.MonkeyPatch,
    routes_path: Path,
    a_env: str | None,
    b_consent_env: str | None,
    named: str,
) -> None:
    """Routes of one workspace naming two Redis servers (or one and none): one line naming both routes."""
    placed_env.setenv("OTHER_REDIS_URL", "redis://127.0.0.1:3/0")
    text = two_workspaces("https://rest.fra-01.braze.eu", a_env)
    consent = text.rindex('redis_url_env = "BRAND_B_REDIS_URL"')
    replaced = f'redis_url_env = "{b_consent_env}"' if b_consent_env else ""
    routes_path.write_text(
        text[:consent] + replaced + text[consent + len('redis_url_env = "BRAND_B_REDIS_URL"') :]
    )
    message = config_error()
    assert named in message and "share workspace" in message and "\n" not in message
    assert "same redis_url_env, or none" in message


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "key 'redis_url_env' names BRAND_B_REDIS_URL, which is not set"),
        ("http://127.0.0.1:1", "key 'redis_url_env': BRAND_B_REDIS_URL does not hold a Redis URL"),
        (
            "redis+sentinel://:pw-9f2c@10.0.0.1:26379",  # no service
            "key 'redis_url_env': BRAND_B_REDIS_URL: a Sentinel URL takes the form redis+sentinel://",
        ),
        ("redis+sentinel://:pw-9f2c@10.0.0.1:x/brand-b", "a Sentinel URL takes the form"),
    ],
)
def test_redis_url_env_must_name_a_redis_url(
    placed_env: pytest.MonkeyPatch, routes_path: Path, value: str | None, said: str
) -> None:
    """An unset variable, or one that holds no Redis URL, stops the boot naming the route and the key."""
    if value is None:
        placed_env.delenv("BRAND_B_REDIS_URL")
    else:
        placed_env.setenv("BRAND_B_REDIS_URL", value)
    routes_path.write_text(two_workspaces("https://rest.fra-01.braze.eu"))
    message = config_error()
    assert "route 'b'" in message and said in message
    assert "pw-9f2c" not in message


@pytest.fixture
def two_redis(
    own_redis: Callable[..., RedisServer], placed_env: pytest.MonkeyPatch, routes_path: Path
) -> tuple[RedisServer, RedisServer, FlaskClient]:
    """REDIS_URL on one redis-server of the test's own, brand B on another; the app on both."""
    default, brand_b = own_redis(), own_redis()
    placed_env.setenv("REDIS_URL", default.url)
    placed_env.setenv("BRAND_B_REDIS_URL", brand_b.url)
    routes_path.write_text(two_workspaces("https://rest.fra-01.braze.eu"))
    placed_env.setenv("RELAY_ADMIN_KEYS", ADMIN_KEY)
    return default, brand_b, create_app_for(load_settings()).test_client()


def post(client: FlaskClient, database: str, seq: int) -> int:
    """One postback to a route's table; its status."""
    body = {"external_id": f"{database}-{seq}", "name": "tick", "seq": seq}
    answer = client.post(
        f"/postback/v3/event/{database}/events", json=body, headers={"X-TD-Write-Key": WRITE_KEY}
    )
    return answer.status_code


def test_the_edge_stores_each_route_on_its_workspaces_redis(
    two_redis: tuple[RedisServer, RedisServer, FlaskClient],
) -> None:
    """Each route's records, counts and drain jobs land on its workspace's Redis and nowhere else; with brand
    B's Redis stopped its routes answer 503, the default's 200; /readyz and /metrics name the one down."""
    default, brand_b, web = two_redis
    a_client, b_client = redis.Redis(port=default.port), redis.Redis(port=brand_b.port)
    assert post(web, "a", 1) == 200 and post(web, "b", 1) == 200
    b = load_settings().routes["b"].workspace
    assert (
        a_client.llen(store.keys("default").lane_list("track.0"))
        + a_client.llen(store.keys("default").lane_list("track.1"))
        == 1
    )
    assert sum(b_client.llen(store.keys(b).lane_list(f"track.{shard}")) for shard in (0, 1)) == 1
    assert not a_client.keys(f"relay:{{{b}}}:*") and not b_client.keys("relay:{default}:*")
    assert b_client.llen(f"rq:queue:{store.QUEUE_BULK}") == 1 == a_client.llen(f"rq:queue:{store.QUEUE_BULK}")
    metrics = web.get("/metrics").get_data(as_text=True)
    assert 'relay_records_accepted_total{route="a"} 1.0' in metrics
    assert 'relay_records_accepted_total{route="b"} 1.0' in metrics
    assert 'relay_redis_up{redis="BRAND_B_REDIS_URL"} 1.0' in metrics

    brand_b.stop()
    assert post(web, "b", 2) == 503
    assert post(web, "a", 2) == 200
    ready = web.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["status"] == "degraded" and ready.json["redis_down"] == {
        "BRAND_B_REDIS_URL": "unreachable"
    }
    metrics = web.get("/metrics").get_data(as_text=True)
    assert 'relay_redis_up{redis="BRAND_B_REDIS_URL"} 0.0' in metrics
    assert 'relay_records_accepted_total{route="a"} 2.0' in metrics

    default.stop()
    assert web.get("/readyz").status_code == 503


def test_a_workspace_finds_its_own_redis_through_sentinel(
    own_redis: Callable[..., RedisServer], placed_env: pytest.MonkeyPatch, routes_path: Path, tmp_path: Path
) -> None:
    """A workspace's redis_url_env may name its primary through Sentinel (a redis+sentinel:// URL):
    its routes' records land on the primary the Sentinels name, the default workspace's on REDIS_URL."""
    default, brand_b = own_redis(), own_redis()
    sentinels = Sentinels(tmp_path / "sentinels", brand_b)
    try:
        wait_for(lambda: sentinels.primary_port() == brand_b.port, 30, "the Sentinels naming its primary")
        placed_env.setenv("REDIS_URL", default.url)
        placed_env.setenv("BRAND_B_REDIS_URL", f"redis+sentinel://{sentinels.setting}/{SERVICE}/0")
        routes_path.write_text(two_workspaces("https://rest.fra-01.braze.eu"))
        web = create_app_for(load_settings()).test_client()
        assert post(web, "a", 1) == 200 and post(web, "b", 1) == 200
        b = load_settings().routes["b"].workspace
        on_b = redis.Redis(port=brand_b.port)
        assert sum(on_b.llen(store.keys(b).lane_list(f"track.{shard}")) for shard in (0, 1)) == 1
        assert not redis.Redis(port=default.port).keys(f"relay:{{{b}}}:*")
    finally:
        sentinels.stop()


def test_the_admin_pages_the_cli_and_metrics_show_every_redis(
    two_redis: tuple[RedisServer, RedisServer, FlaskClient],
) -> None:
    """Dead letters of both workspaces (each on its Redis) are counted, listed, replayed and purged
    together; the overview shows each Redis's RQ queues."""
    _, _, web = two_redis
    for database in ("a", "b"):
        answer = web.post(
            f"/postback/v3/event/{database}/events",
            json={"name": "nobody"},
            headers={"X-TD-Write-Key": WRITE_KEY},
        )
        assert answer.status_code == 200 and answer.json["rejected"]
    assert "relay_dead_letters 2.0" in web.get("/metrics").get_data(as_text=True)
    auth = {"Authorization": "Basic " + base64.b64encode(f"ops:{ADMIN_KEY}".encode()).decode()}
    overview = web.get("/admin/", headers=auth).get_data(as_text=True)
    assert "relay-bulk (REDIS_URL)" in overview and "relay-bulk (BRAND_B_REDIS_URL)" in overview
    listed = web.get("/admin/dead", headers=auth).get_data(as_text=True)
    assert len(re.findall(r'<a href="/admin/dead/[^"?]+">', listed)) == 2, "one row per dead letter"
    runner = web.application.test_cli_runner()
    shown = runner.invoke(args=["dead", "list"])
    assert shown.exit_code == 0 and "2 shown, 2 dead letter(s) in the store" in shown.output
    assert {line.split()[1] for line in shown.output.splitlines() if "invalid" in line} == {"a", "b"}
    assert "replayed 0 record(s); 2 still invalid" in runner.invoke(args=["dead", "replay", "--all"]).output
    assert "purged 2 dead letter(s)" in runner.invoke(args=["dead", "purge", "--all", "--yes"]).output
    assert "relay_dead_letters 0.0" in web.get("/metrics").get_data(as_text=True)


def delivered(braze: Simulator, database: str, count: int) -> set[int]:
    """The `seq` of each event of a route's users the simulator holds."""
    found: set[int] = set()
    for seq in range(count):
        profile = braze.state.profile(f"{database}-{seq}") or {}
        found.update(event["properties"]["seq"] for event in profile.get("events", []))
    return found


class Poster:
    """Postbacks to two routes through the web; remembers which each route acknowledged."""

    def __init__(self, base: str) -> None:
        self.base, self.session = base, requests.Session()
        self.acknowledged: dict[str, set[int]] = {"a": set(), "b": set()}
        self.sent = 0

    def round(self, count: int) -> dict[str, list[int]]:
        """`count` postbacks to each route; the statuses each answered."""
        statuses: dict[str, list[int]] = {"a": [], "b": []}
        for seq in range(self.sent, self.sent + count):
            for database in ("a", "b"):
                answer = self.session.post(
                    f"{self.base}/postback/v3/event/{database}/events",
                    json={"external_id": f"{database}-{seq}", "name": "tick", "seq": seq},
                    headers={"X-TD-Write-Key": WRITE_KEY},
                    timeout=30,
                )
                statuses[database].append(answer.status_code)
                if answer.status_code == 200:
                    self.acknowledged[database].add(seq)
        self.sent += count
        return statuses


@pytest.mark.e2e
def test_two_workspaces_on_two_redis_one_stopped(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """Gunicorn and the Procfile's worker on two redis-servers: records of both workspaces are delivered;
    brand B's Redis stopped, the default's routes keep answering 2xx and delivering while brand B's answer
    503; restarted, brand B's records flow again, and every record acknowledged reaches Braze. Brand B's
    worker process killed, the worker command starts it again."""
    default, brand_b = own_redis(*AOF), own_redis(*AOF)
    routes_file.write_text(two_workspaces(braze.url))
    extra = {"BRAND_B_REDIS_URL": brand_b.url, "BRAND_B_BRAZE_KEY": BRAZE_KEY}
    with running_stack(tmp_path, routes_file, braze, default.url, **extra) as (procs, base):
        worker = procs.start("worker")
        poster = Poster(base)
        assert poster.round(20) == {"a": [200] * 20, "b": [200] * 20}
        wait_for(
            lambda: delivered(braze, "b", poster.sent) == poster.acknowledged["b"], 60, "brand B's records"
        )
        wait_for(
            lambda: delivered(braze, "a", poster.sent) == poster.acknowledged["a"], 60, "default's records"
        )

        assert poster.round(20) == {"a": [200] * 20, "b": [200] * 20}
        brand_b.stop()  # brand B's last records may still wait there: they come back with it
        during = poster.round(20)
        assert during == {"a": [200] * 20, "b": [503] * 20}
        wait_for(
            lambda: delivered(braze, "a", poster.sent) == poster.acknowledged["a"], 60, "default's records"
        )
        assert requests.get(base + "/readyz", timeout=5).json()["redis_down"] == {
            "BRAND_B_REDIS_URL": "unreachable"
        }

        brand_b.start()  # the same port and AOF: it comes back with what it held
        wait_for(lambda: poster.round(1)["b"] == [200], 30, "brand B's routes to answer 200 again")
        assert poster.round(20) == {"a": [200] * 20, "b": [200] * 20}
        wait_for(
            lambda: delivered(braze, "b", poster.sent) == poster.acknowledged["b"], 60, "brand B's records"
        )
        wait_for(
            lambda: delivered(braze, "a", poster.sent) == poster.acknowledged["a"], 60, "default's records"
        )
        assert len(poster.acknowledged["a"]) == poster.sent
        assert all(proc.poll() is None for proc in procs.running), "a relay process exited"
        started = {
            line["redis"]: line["pid"] for line in procs.logged(worker) if line["msg"] == "worker started"
        }
        assert sorted(started) == ["BRAND_B_REDIS_URL", "REDIS_URL"], "one worker process per Redis"

        os.kill(started["BRAND_B_REDIS_URL"], signal.SIGKILL)  # the worker command starts it again
        wait_for(lambda: len(workers_started(procs, worker)) == 3, 30, "brand B's worker started again")
        assert workers_started(procs, worker)[-1] == "BRAND_B_REDIS_URL"
        assert poster.round(10) == {"a": [200] * 10, "b": [200] * 10}
        wait_for(
            lambda: delivered(braze, "b", poster.sent) == poster.acknowledged["b"], 60, "brand B's records"
        )

        # The worker command killed outright cannot stop its workers: they see it gone and stop.
        pids = [line["pid"] for line in procs.logged(worker) if line["msg"] == "worker started"][-2:]
        worker.kill()
        wait_for(lambda: not any(map(running, pids)), 30, "the workers of a killed worker command to stop")


def running(pid: int) -> bool:
    """True while the process runs (not gone, not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def workers_started(procs: Processes, worker: subprocess.Popen[bytes]) -> list[str]:
    """The Redis of each `worker started` line the worker command's processes printed, in order."""
    return [line["redis"] for line in procs.logged(worker) if line["msg"] == "worker started"]


@pytest.mark.e2e
def test_a_workspaces_evicting_redis_stops_worker_web_and_check(
    own_redis: Callable[..., RedisServer],
    braze: Simulator,
    routes_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Brand B's Redis would evict records: the worker command (and the worker of REDIS_URL it started),
    the web and `check` refuse to start, each with one line naming BRAND_B_REDIS_URL."""
    default, brand_b = own_redis(), own_redis(*EVICTING)
    routes_file.write_text(two_workspaces(braze.url))
    env = environ_for(default, braze, routes_file, BRAND_B_REDIS_URL=brand_b.url, BRAND_B_BRAZE_KEY=BRAZE_KEY)
    worker = refused_start([sys.executable, "-m", "handlers.worker"], env)
    assert worker.startswith("braze-relay worker: BRAND_B_REDIS_URL: Redis maxmemory-policy is 'allkeys-lru'")
    web = refused_start(web_command(free_port()), env, "maxmemory-policy")
    assert web.startswith("braze-relay web: BRAND_B_REDIS_URL: Redis maxmemory-policy is 'allkeys-lru'")
    for name in ("REDIS_URL", "BRAZE_REST_ENDPOINT", "BRAZE_API_KEY", "RELAY_CONFIG", "RELAY_WRITE_KEYS"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("BRAND_B_REDIS_URL", brand_b.url)
    monkeypatch.setenv("BRAND_B_BRAZE_KEY", BRAZE_KEY)
    monkeypatch.delenv("RELAY_ALLOW_EVICTION", raising=False)
    result = create_app_for(load_settings()).test_cli_runner().invoke(args=["check"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("braze-relay: BRAND_B_REDIS_URL: Redis maxmemory-policy is 'allkeys-lru'")
