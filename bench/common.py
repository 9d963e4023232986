"""What the benchmarks share: processes started from the Procfile, wrk, /proc sampling, Redis and simulator.

Every runnable benchmark (`python -m bench.<name>`) declares `SMOKE`, the arguments of a tiny
workload on the same code path, and ends through `run`: `--smoke` runs that workload in a few
seconds (no waiting for a quiet machine). A benchmark notes what went wrong with `problem` (a
non-2xx answer, a record not delivered); `run` then exits 1, as it does on an exception, so a
benchmark that breaks fails the test command (tests/test_bench.py runs every `--smoke`).

Everything listens on and talks to 127.0.0.1 only. Every process a benchmark starts gets a session of
its own and is stopped (SIGTERM, then SIGKILL) by `Processes.stop_all`, which the benchmarks call from
`finally` blocks; SIGTERM/SIGHUP to the benchmark itself are turned into an exception so those run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import requests

from relay.lanes import Lane

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "postback.lua"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
WRITE_KEY = "bench-write-key-3c9d"
BRAZE_KEY = "bench-braze-key-7a21"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTBACK_PATH = "/postback/v3/event/bench/events"
TRACK_SHARDS = 2  # the product's default RELAY_TRACK_SHARDS: default:track.0 and default:track.1
TRACK_LANES = [Lane(f"default:track.{n}") for n in range(TRACK_SHARDS)]
TRACK_QUEUES = [lane.list_key for lane in TRACK_LANES]
TRACK_LEASES = [lane.lease_key for lane in TRACK_LANES]


def track_waiting(client: redis.Redis) -> int:
    """Records waiting in the default workspace's track lanes (every shard)."""
    with client.pipeline(transaction=False) as pipe:
        for key in TRACK_QUEUES:
            pipe.llen(key)
        return sum(pipe.execute())


def track_idle(client: redis.Redis) -> bool:
    """True when no track record waits and no drain job holds a track lane."""
    return not track_waiting(client) and not client.exists(*TRACK_LEASES)


ROUTES = """
[routes.events]
database = "bench"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def checkout() -> str:
    """The commit measured, and whether tracked files differ from it (read-only, no index lock)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown checkout"
    return f"commit {head or '?'}" + (" + uncommitted changes" if dirty else "")


def machine() -> str:
    """Cores, memory and load average, for the report."""
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, {total_kb / 1024 / 1024:.1f} GiB memory, "
        f"load average before the run {load[0]:.2f}"
    )


class Interrupted(Exception):
    """SIGTERM or SIGHUP reached the benchmark: unwind so every started process is stopped."""


PROBLEMS: list[str] = []  # what went wrong in this run (problem()): the run exits 1
SMOKING: list[bool] = []  # [True] in a --smoke run: tiny workloads, no waiting for a quiet machine


def problem(what: str) -> None:
    """Note that something went wrong (a non-2xx answer, a record lost): the run's exit status is 1."""
    PROBLEMS.append(what)
    print(f"PROBLEM: {what}", file=sys.stderr, flush=True)


def expect(ok: bool, what: str) -> None:
    """`problem(what)` unless `ok`."""
    if not ok:
        problem(what)


def smoke_argv(argv: list[str], smoke: list[str]) -> list[str]:
    """The arguments to run with: `smoke` in place of `--smoke` (later arguments still win)."""
    if "--smoke" not in argv:
        return argv
    SMOKING.append(True)
    at = argv.index("--smoke")
    return argv[:at] + smoke + argv[at + 1 :]


def run(main: Callable[[], int]) -> None:
    """Run a benchmark's main (`--smoke`: its module's SMOKE arguments); exit 1 after a `problem`.

    On Ctrl-C or SIGTERM say that everything it started was stopped.
    """
    smoke = getattr(sys.modules.get(main.__module__), "SMOKE", None)
    if smoke is not None:
        sys.argv[1:] = smoke_argv(sys.argv[1:], smoke)
    try:
        status = main()
        if PROBLEMS:
            print(f"{len(PROBLEMS)} problem(s): {'; '.join(PROBLEMS[:5])}", file=sys.stderr)
            status = status or 1
        sys.exit(status)
    except (KeyboardInterrupt, Interrupted) as stop:
        print(
            f"interrupted ({stop or 'Ctrl-C'}): every process this benchmark started was stopped",
            file=sys.stderr,
        )
        sys.exit(130)


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into an exception (Ctrl-C already raises KeyboardInterrupt)."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def procfile_command(role: str) -> str:
    """The command the Procfile gives a role."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == role:
            return command.strip()
    raise KeyError(role)


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `check` until it holds; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, redis.RedisError):
            if check():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def http_ok(url: str) -> bool:
    """True if a GET of `url` answers 200."""
    return requests.get(url, timeout=1).status_code == 200


class Workdir:
    """A temporary directory for logs and the routes file, removed at the end unless kept."""

    def __init__(self, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="braze-relay-bench-"))
        self.keep = keep

    def routes_file(self) -> Path:
        """The bench's routes file: one custom_events route, database 'bench', table 'events'."""
        path = self.path / "relay.toml"
        path.write_text(ROUTES)
        return path

    def close(self) -> None:
        """Remove the directory (unless asked to keep it)."""
        if self.keep:
            print(f"logs kept in {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any relay/Braze/gunicorn knob, plus `extra`."""
    prefixes = ("RELAY_", "BRAZE_", "GUNICORN_", "REDIS_URL", "WEB_CONCURRENCY", "PORT", "HOST")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    # BENCH_GUNICORN_X=v runs the benchmark's gunicorn with GUNICORN_X=v (a worker class to compare).
    env.update(
        {
            key.removeprefix("BENCH_"): value
            for key, value in os.environ.items()
            if key.startswith("BENCH_GUNICORN_")
        }
    )
    env.update(extra)
    return env


def relay_env(braze_url: str, routes: Path, web_port: int, **knobs: str) -> dict[str, str]:
    """The variables an operator would set: the product's defaults for every delivery knob not given."""
    return base_env(
        {
            "REDIS_URL": REDIS_URL,
            "BRAZE_REST_ENDPOINT": braze_url,
            "BRAZE_API_KEY": BRAZE_KEY,
            "RELAY_CONFIG": str(routes),
            "RELAY_WRITE_KEYS": WRITE_KEY,
            "HOST": HOST,
            "PORT": str(web_port),
            "WEB_CONCURRENCY": "2",
            "GUNICORN_ACCESS_LOG": "",  # empty: access log off
            **knobs,
        }
    )


class Processes:
    """Processes started by a benchmark, each in a session of its own, output to a log file each."""

    def __init__(self, log_dir: Path, root: Path = ROOT) -> None:
        self.log_dir, self.root = log_dir, root  # root: the checkout the processes run from
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start `command` (a shell command line, exec'd so the pid is the process's own)."""
        log_path = self.log_dir / f"{name}-{len(self.running)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((name, proc))
        return proc

    def check_alive(self) -> None:
        """Raise if a started process has exited (with the tail of its log)."""
        for index, (name, proc) in enumerate(self.running):
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}-{index}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} (pid {proc.pid}) exited with {proc.returncode}:\n{tail}")

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM each started process group, wait up to `grace` seconds, then SIGKILL what is left."""
        for _, proc in self.running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: gunicorn's workers too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self.running.clear()


def start_redis(procs: Processes) -> str:
    """A redis-server of the bench's own on a free port (nothing persisted); the bench then uses it.

    Its INFO counts only the relay's commands and CPU: the machine's shared Redis also serves other
    people's test suites, whose commands INFO counts too.
    """
    global REDIS_URL  # noqa: PLW0603 - every helper here reads the bench's Redis from this name
    port = free_port()
    procs.start("redis", f"redis-server --port {port} --bind {HOST} --save '' --appendonly no", base_env({}))
    REDIS_URL = f"redis://{HOST}:{port}/0"
    wait_for(
        lambda: bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()), 20, "the bench's redis-server"
    )
    return REDIS_URL


def start_simulator(procs: Processes, latency_ms: float) -> str:
    """`python -m braze_sim` on a free port with `latency_ms`; returns its URL once it answers."""
    port = free_port()
    procs.start(
        "braze_sim",
        f"{sys.executable} -m braze_sim --host {HOST} --port {port} --api-key {BRAZE_KEY} "
        f"--latency-ms {latency_ms:g}",
        base_env({}),
    )
    url = f"http://{HOST}:{port}"
    wait_for(lambda: http_ok(url + "/_sim/stats"), 20, "the Braze simulator")
    return url


def start_gunicorn(procs: Processes, env: dict[str, str], app: str | None = None) -> str:
    """The Procfile's web command (optionally serving another app), once it answers; returns its URL."""
    command = procfile_command("web")
    if app is not None:
        command = command.replace('"receiver:create_app()"', f'"{app}"')
        assert app in command, "the Procfile's web command changed shape"
    procs.start("web", command, env)
    url = f"http://{HOST}:{env['PORT']}"
    probe = "/readyz" if app is None else "/healthz"
    wait_for(lambda: http_ok(url + probe), 30, f"gunicorn to answer {probe}")
    return url


# ---------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What wrk's done() hook printed, plus the wall clock around the run."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    by_status: dict[str, int]
    started: float
    ended: float
    cpu_s: float  # wrk's own CPU seconds

    @property
    def non_2xx(self) -> int:
        """Answers with status >= 400 (wrk counts those as status errors)."""
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        """Connect, read, write errors and timeouts."""
        return sum(self.errors.get(name, 0) for name in ("connect", "read", "write", "timeout"))

    @property
    def ok(self) -> int:
        """Requests answered with a 2xx/3xx."""
        return self.requests - self.non_2xx

    @property
    def ok_per_s(self) -> float:
        """2xx answers per second of the run."""
        return self.ok / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    run_id: str,
    threads: int = 2,
    *,
    script: Path = LUA,
    shape: str = "td",
) -> WrkResult:
    """Load `url` with a wrk script (bench/postback.lua, its bodies in `shape`: "td" or "segment");
    bounded by wrk's own duration plus a margin."""
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark loads the relay with wrk: apt-get install -y wrk")
    env = base_env({"BENCH_WRITE_KEY": WRITE_KEY, "BENCH_RUN": run_id, "BENCH_SHAPE": shape})
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 30, check=False)
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    latency = {key: value / 1000 for key, value in data["latency_us"].items()}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    refused = data["errors"].get("status", 0)
    expect(not refused, f"{refused} non-2xx answers to wrk at {url} ({data['by_status']})")
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=data["errors"],
        latency_ms=latency,
        by_status=data["by_status"],
        started=started,
        ended=ended,
        cpu_s=cpu,
    )


# ---------------------------------------------------------------- /proc


def _ppid_map() -> dict[int, list[int]]:
    """Children of every process, from /proc/<pid>/stat (no /proc/<pid>/task/*/children here)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat), to see what else ran meanwhile."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def wait_quiet(threshold: float = 0.3, limit: float = 45.0) -> float:
    """Wait (at most `limit` s) until the machine uses under `threshold` cores over one second.

    The machine is shared: starting a load while someone's tests run skews every figure. Returns the
    cores in use when the wait ended (above `threshold` if it timed out). A smoke run does not wait.
    """
    if SMOKING:
        return float("nan")
    deadline = time.monotonic() + limit
    while True:
        before = machine_busy_s()
        time.sleep(1.0)
        busy = machine_busy_s() - before
        if busy < threshold or time.monotonic() > deadline:
            if busy >= threshold:
                print(
                    f"warning: the machine stayed busy ({busy:.2f} cores in use); measuring anyway",
                    file=sys.stderr,
                    flush=True,
                )
            return busy


def self_cpu_s() -> float:
    """CPU seconds of this benchmark process (its sampler thread and HTTP polling included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_s(root: int) -> float:
    """CPU seconds so far of a process and its descendants."""
    return sum(cpu_s(pid) for pid in _tree(root, _ppid_map()))


@dataclass
class Group:
    """Processes of one kind: each root and its descendants (gunicorn's master and its workers)."""

    name: str
    roots: list[int]
    peak_total_mb: float = 0.0  # peak of the sum over the whole group
    peak_root_mb: dict[int, float] = field(default_factory=dict)  # per root, with its descendants
    peak_process_mb: float = 0.0  # the largest single process


class Sampler(threading.Thread):
    """Every `interval` s: VmRSS of each group's processes, and the length of the relay's lane."""

    def __init__(self, groups: list[Group], client: redis.Redis | None, interval: float = 0.1) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.groups, self.client, self.interval = groups, client, interval
        self.stopping = threading.Event()
        self.backlog: list[tuple[float, int]] = []  # (time, LLEN of the lane)
        self._children: dict[int, list[int]] = {}
        self._scanned = 0.0

    def pids(self, root: int) -> list[int]:
        """The root and its descendants (the process tree is rescanned at most once a second)."""
        if time.monotonic() - self._scanned > 1.0:
            self._children, self._scanned = _ppid_map(), time.monotonic()
        return _tree(root, self._children)

    def sample(self) -> None:
        """Take one sample."""
        for group in self.groups:
            total = 0.0
            for root in group.roots:
                sizes = [rss_mb(pid) for pid in self.pids(root)]
                tree = sum(sizes)
                total += tree
                group.peak_root_mb[root] = max(group.peak_root_mb.get(root, 0.0), tree)
                group.peak_process_mb = max(group.peak_process_mb, *sizes, 0.0)
            group.peak_total_mb = max(group.peak_total_mb, total)
        if self.client is not None:
            with contextlib.suppress(redis.RedisError):
                self.backlog.append((time.time(), track_waiting(self.client)))

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each group (all processes of its trees), this process and the machine."""
        self._scanned = 0.0
        seconds = {
            group.name: sum(cpu_s(pid) for root in group.roots for pid in self.pids(root))
            for group in self.groups
        }
        if self.client is not None:
            with contextlib.suppress(redis.RedisError):
                info = self.client.info("cpu")
                seconds["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return {**seconds, "bench": self_cpu_s(), "machine": machine_busy_s()}

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stopping.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        """Stop sampling (bounded wait)."""
        self.stopping.set()
        self.join(timeout=2)


# ---------------------------------------------------------------- Redis


def redis_client() -> redis.Redis:
    """The bench's own Redis database."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    client.ping()
    return client


@dataclass
class RedisSnapshot:
    """Server-wide counters at one moment (the server is shared: others' commands count too)."""

    commands: int
    calls: dict[str, int]
    cpu_s: float

    @classmethod
    def take(cls, client: redis.Redis) -> RedisSnapshot:
        """Read INFO stats, commandstats and cpu."""
        info = client.info("all")
        calls = {
            key.removeprefix("cmdstat_"): value["calls"]
            for key, value in info.items()
            if key.startswith("cmdstat_")
        }
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cls(int(info["total_commands_processed"]), calls, cpu)

    def since(self, earlier: RedisSnapshot) -> dict[str, Any]:
        """Commands, per-command calls and CPU seconds between two snapshots."""
        calls = {name: count - earlier.calls.get(name, 0) for name, count in self.calls.items()}
        return {
            "commands": self.commands - earlier.commands,
            "calls": {name: count for name, count in sorted(calls.items(), key=lambda kv: -kv[1]) if count},
            "cpu_s": self.cpu_s - earlier.cpu_s,
        }


# ---------------------------------------------------------------- simulator


class SimLog:
    """Reads the simulator's request log incrementally: /users/track events by their `id` property."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url, self.prefix = url, f"{run_id}-"
        self.next = 0
        self.session = requests.Session()
        self.track_requests = 0
        self.track_non_2xx = 0
        self.first_time: dict[str, float] = {}  # id -> arrival time of its first delivery
        self.sent_at: dict[str, float] = {}
        self.copies = 0  # events received, duplicates included
        self.track_log: list[tuple[float, int]] = []  # (arrival, events) of each /users/track request

    def reset(self, latency_ms: float) -> None:
        """Clear the simulator's state and log (before a measured run), then set its latency again.

        /_sim/reset puts every fault back to its default, `latency_ms` (set by --latency-ms) included.
        """
        self.session.post(self.url + "/_sim/reset", timeout=10).raise_for_status()
        answer = self.session.post(self.url + "/_sim/faults", json={"latency_ms": latency_ms}, timeout=10)
        answer.raise_for_status()
        if answer.json().get("latency_ms") != latency_ms:
            raise RuntimeError(f"the simulator did not take latency_ms={latency_ms}: {answer.text}")
        self.next = 0

    def start_at_end(self) -> None:
        """Ignore what the simulator logged so far (without clearing it)."""
        answer = self.session.get(self.url + "/_sim/stats", timeout=10)
        answer.raise_for_status()
        self.next = int(answer.json()["requests"])

    def poll(self) -> None:
        """Fetch the entries logged since the last poll."""
        answer = self.session.get(self.url + "/_sim/requests", params={"since": self.next}, timeout=30)
        answer.raise_for_status()
        data = answer.json()
        self.next = data["next"]
        for entry in data["requests"]:
            if entry["path"] != "/users/track":
                continue
            self.track_requests += 1
            self.track_log.append((entry["time"], len((entry.get("body") or {}).get("events") or [])))
            ok = 200 <= entry["status"] < 300
            if not ok:
                self.track_non_2xx += 1
                problem(f"the simulator answered {entry['status']} to a /users/track request")
                continue
            for event in (entry.get("body") or {}).get("events") or []:
                props = event.get("properties") or {}
                rid = props.get("id")
                if not isinstance(rid, str) or not rid.startswith(self.prefix):
                    continue
                self.copies += 1
                if rid not in self.first_time:
                    self.first_time[rid] = entry["time"]
                    self.sent_at[rid] = float(props.get("sent_at", 0.0))

    @property
    def delivered(self) -> int:
        """Distinct records of this run Braze took."""
        return len(self.first_time)

    def cycle(self, start: float, end: float) -> tuple[float, float]:
        """Median seconds between consecutive /users/track requests in [start, end], mean events each."""
        window = sorted(item for item in self.track_log if start <= item[0] <= end)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(window)]
        events = [n for _, n in window]
        return (
            statistics.median(gaps) if gaps else float("nan"),
            statistics.mean(events) if events else float("nan"),
        )

    def latencies(self) -> list[float]:
        """Braze arrival minus sent_at, seconds, per delivered record."""
        return [self.first_time[rid] - self.sent_at[rid] for rid in self.first_time]


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; nan if empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(0, min(len(data) - 1, round(q / 100 * len(data) + 0.5) - 1))
    return data[rank]


def median(values: Iterable[float]) -> float:
    """The median, ignoring None and nan; nan if nothing is left."""
    data = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(data) if data else float("nan")


def measure_variant(
    opts: Any, *, app: str | None = None, routes: str | None = None, shape: str = "td", **env_extra: str
) -> dict[str, float]:
    """Serve the relay (or `app`, with `routes` as its routes file) with the Procfile's gunicorn, the
    simulator (50 ms) and `opts.workers` RQ workers; load it with wrk (`opts.seconds`,
    `opts.connections`) once the machine is quiet (unless `opts.quiet_wait` is off); stop everything.
    Web CPU per request, the rest of the machine's cores (RQ workers, Redis, simulator, anyone else)
    and wrk's figures.
    """
    client = redis_client()
    client.flushdb()
    work = Workdir()
    procs = Processes(work.path)
    try:
        path = work.routes_file()
        if routes is not None:
            path.write_text(routes)
        sim_url = start_simulator(procs, 50)
        env = relay_env(sim_url, path, free_port(), **env_extra)
        url = start_gunicorn(procs, env, app=app)
        web_pid = procs.running[-1][1].pid
        for _ in range(opts.workers):
            procs.start("worker", procfile_command("worker"), env)
        wait_for(lambda: client.scard("rq:workers") >= opts.workers, 30, "the RQ workers to register")
        if opts.quiet_wait:
            wait_quiet()
        cpu, busy = tree_cpu_s(web_pid), machine_busy_s()
        result = run_wrk(
            url + POSTBACK_PATH, opts.seconds, opts.connections, f"v{int(time.time())}", shape=shape
        )
        cpu, busy = tree_cpu_s(web_pid) - cpu, machine_busy_s() - busy
        procs.check_alive()
    finally:
        procs.stop_all()
        work.close()
        client.flushdb()
    wall = result.ended - result.started
    return {
        "req_per_s": result.ok_per_s,
        "non_2xx": result.non_2xx,
        "web_cpu_ms": 1000 * cpu / max(result.requests, 1),
        "p99_ms": result.latency_ms["p99"],
        "other_cores": max(0.0, busy - cpu - result.cpu_s) / wall,
    }


def variant_medians(rounds: list[dict[str, dict[str, float]]], name: str, anchor: str) -> dict[str, float]:
    """A variant's medians over rounds, its ratio to `anchor` taken within each round."""
    return {
        "req_per_s": median(r[name]["req_per_s"] for r in rounds),
        "share": median(r[name]["req_per_s"] / r[anchor]["req_per_s"] for r in rounds),
        "web_cpu_ms": median(r[name]["web_cpu_ms"] for r in rounds),
        "other_cores": median(r[name]["other_cores"] for r in rounds),
        "non_2xx": sum(r[name]["non_2xx"] for r in rounds),
    }


def put_export(url: str, route: str, body: bytes, session: Any = requests) -> requests.Response:
    """One TD query-result export (`body`: its JSON) PUT to the relay's /export/<route>, as TD sends it."""
    auth = base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()
    return cast(
        "requests.Response",
        session.put(
            f"{url}/export/{route}",
            data=body,
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
            timeout=120,
        ),
    )


def variant_options(
    prog: str,
    doc: str | None,
    argv: list[str] | None,
    more: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """The options of a bench that serves variants one after another (measure_variant), and those
    `more` adds; signals handled."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    if more is not None:
        more(parser)
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (default: %(default)s)")
    parser.add_argument(
        "--no-quiet-wait", dest="quiet_wait", action="store_false", help="start each load at once"
    )
    opts = parser.parse_args(argv)
    install_signal_handlers()
    return opts
