"""What the order across lanes costs where nothing depends, and how long the calls it orders wait.

    python -m bench.order [--repeat 1] [--seconds 6] [--connections 32] [--drain-backlog 100000]
                          [--backlog 100000] [--latency-ms 100] [--rate 10] [--cases 400] [--smoke]

Each round, with RELAY_ORDER_ACROSS_LANES=1 (the default) and =0 (lanes drained independently),
in alternating order so that neither always runs first:

1. The edge: one-record track postbacks (bench/postback.lua) through the `[routes.events]` route,
   served as bench/transform.py serves its variants (the Procfile's gunicorn, 2 RQ workers, the
   simulator at 50 ms): accepted postbacks/s, their ratio within the round, web CPU per postback.
2. The drain: bench/delivery.py's drain of its `--workload`: `--drain-backlog` custom events exported
   with no worker running, then the Procfile's 2 `worker` processes draining them into the simulator
   at 50 ms: worker CPU per 1,000 records over the drain, records/s.

Then, once with the mechanism on and once off, the calls it orders: `--backlog` track records
stored with no worker running, then the Procfile's `worker` and `consent` started, Braze answering
in `--latency-ms`. While the backlog drains, `--rate` cases a second each post (one postback per
call) an alias creation, an identify of that alias (it waits for the alias creation: what it
depends on), and a delete of a user whose events wait in the backlog (those are superseded, not
waited for). For each call: the relay's 2xx to its arrival at the simulator; p50, p99 and max of
the calls accepted while track records still waited, and how many still waited when the call
reached Braze. The run with the order off shows what the calls wait for anyway: the worker's other
lanes (one drain job at a time, each for its slice).

`--smoke`: a tiny workload on the same code path (SMOKE: a few thousand records, 1 s of load, no
wait for a quiet machine, the calls with the order on only). Any error exits non-zero: a non-2xx
answer, a record not delivered or delivered twice, a call that never reaches Braze, a process that
dies. Targets (printed as PASS or FAIL, never an error): under 5% on postbacks/s and on worker CPU
per 1,000 records; a delete's p99 under 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROUTES,
    WRITE_KEY,
    Group,
    Processes,
    Sampler,
    Workdir,
    checkout,
    expect,
    free_port,
    machine,
    measure_variant,
    median,
    percentile,
    procfile_command,
    redis_client,
    relay_env,
    run,
    start_gunicorn,
    start_redis,
    start_simulator,
    track_waiting,
    variant_medians,
    variant_options,
    wait_for,
)
from bench.delivery import export_backlog, one_drain

ON, OFF = "order on", "order off"
SWITCH = {ON: "1", OFF: "0"}
CALL_ROUTES = (
    ROUTES
    + """
[routes.aliases]
database = "bench"
table = "aliases"
mode = "user_new_alias"

[routes.identify]
database = "bench"
table = "identify"
mode = "user_identifying"

[routes.deletes]
database = "bench"
table = "deletes"
mode = "user_delete"
"""
)
KINDS = ("alias", "identify", "delete")
BACKLOG_USERS = 20_000  # the calls' backlog: 5 events each of 20,000 users
# Where each call lands at Braze: path -> (kind, the body's array, the field naming the call's user).
ARRIVALS = {
    "/users/alias/new": ("alias", "user_aliases", "alias_name"),
    "/users/identify": ("identify", "aliases_to_identify", "external_id"),
    "/users/delete": ("delete", "external_ids", None),
}
Call = tuple[str, str]  # (kind, the user it names)


SMOKE = [
    "--seconds", "1", "--connections", "4", "--no-quiet-wait", "--drain-backlog", "3000",
    "--backlog", "3000", "--cases", "4", "--rate", "20", "--drain-timeout", "60", "--no-calls-off",
]  # fmt: skip


def options(argv: list[str] | None) -> argparse.Namespace:
    """The variant options (bench/common.py) and this bench's own."""

    def more(parser: argparse.ArgumentParser) -> None:
        add = parser.add_argument
        add("--drain-backlog", type=int, default=100_000, help="records per drain (default: %(default)s)")
        add(
            "--workload", default="repeat", help="bench/delivery.py's workload drained (default: %(default)s)"
        )
        add(
            "--backlog", type=int, default=100_000, help="track records the calls meet (default: %(default)s)"
        )
        add(
            "--latency-ms",
            type=float,
            default=100.0,
            help="Braze's answer, for the calls (default: %(default)s)",
        )
        add("--rate", type=float, default=10.0, help="cases a second, 3 calls each (default: %(default)s)")
        add("--cases", type=int, default=400, help="at most this many cases (default: %(default)s)")
        add("--drain-timeout", type=float, default=300.0, help="seconds per drain (default: %(default)s)")
        add("--no-calls-off", dest="calls_off", action="store_false", help="the calls with the order on only")
        add("--shared-redis", dest="own_redis", action="store_false", help="use BENCH_REDIS_URL")
        add("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")

    return variant_options("python -m bench.order", __doc__, argv, more)


def switched(opts: argparse.Namespace, name: str) -> argparse.Namespace:
    """`opts` for bench/delivery.py's one_drain, the mechanism on or off (on the bench's one Redis)."""
    return argparse.Namespace(
        **{**vars(opts), "own_redis": False, "knobs": {"RELAY_ORDER_ACROSS_LANES": SWITCH[name]}}
    )


def cost_round(opts: argparse.Namespace, number: int) -> dict[str, dict[str, dict[str, Any]]]:
    """The edge and the drain, each with the mechanism on and off; odd rounds start with it off."""
    order = (ON, OFF) if number % 2 == 0 else (OFF, ON)
    edge = {name: measure_variant(opts, RELAY_ORDER_ACROSS_LANES=SWITCH[name]) for name in order}
    drain = {
        name: one_drain(switched(opts, name), 50, opts.drain_backlog, opts.workload, label=name)
        for name in order
    }
    for name in order:  # one_drain notes records not delivered or left
        expect(not edge[name]["non_2xx"], f"{name}: {edge[name]['non_2xx']:.0f} postbacks not answered 2xx")
        expect(not drain[name]["duplicates"], f"{name}: {drain[name]['duplicates']} records delivered twice")
    return {"edge": edge, "drain": drain}


def case_calls(run_id: str, n: int) -> list[tuple[Call, str, dict[str, str]]]:
    """Case n's calls in order: (the call, its route's table, its record)."""
    alias = {"alias_name": f"{run_id}-a{n}", "alias_label": "bench"}
    user = f"{run_id}-u{n}"  # export_backlog's user n (n < BACKLOG_USERS): their events wait in the backlog
    return [
        (("alias", alias["alias_name"]), "aliases", alias),
        (("identify", f"{run_id}-id{n}"), "identify", {"external_id": f"{run_id}-id{n}", **alias}),
        (("delete", user), "deletes", {"external_id": user}),
    ]


def braze_arrivals(sim_url: str, since: int) -> tuple[dict[Call, float], int]:
    """Arrival at the simulator of each alias creation, identify and delete answered 2xx; next index."""
    answer = requests.get(f"{sim_url}/_sim/requests", params={"since": since}, timeout=60)
    answer.raise_for_status()
    data = answer.json()
    found: dict[Call, float] = {}
    for entry in data["requests"]:
        if entry["path"] not in ARRIVALS or not 200 <= entry["status"] < 300:
            continue
        kind, array, name = ARRIVALS[entry["path"]]
        for item in (entry.get("body") or {}).get(array, []):
            found.setdefault((kind, item[name] if name else item), entry["time"])
    return found, data["next"]


def send_cases(
    opts: argparse.Namespace, base: str, client: Any, run_id: str
) -> tuple[dict[Call, float], set[Call]]:
    """Cases at `--rate` until the backlog is gone (or `--cases`): each call's 2xx time; those
    accepted while track records waited."""
    session = requests.Session()
    headers = {"X-TD-Write-Key": WRITE_KEY, "Content-Type": "application/json"}
    accepted: dict[Call, float] = {}
    during: set[Call] = set()
    first = time.time()
    for n in range(opts.cases):
        time.sleep(max(0.0, first + n / opts.rate - time.time()))
        for call, table, record in case_calls(run_id, n):
            waiting = track_waiting(client)
            answer = session.post(
                f"{base}/postback/v3/event/bench/{table}",
                data=json.dumps(record),
                headers=headers,
                timeout=30,
            )
            if answer.status_code != 200:
                raise RuntimeError(f"{call[0]} answered {answer.status_code}: {answer.text}")
            accepted[call] = time.time()
            if waiting:
                during.add(call)
        if not track_waiting(client):
            break
    return accepted, during


def calls_run(opts: argparse.Namespace, name: str) -> dict[str, Any]:
    """The ordered calls while a track backlog drains (worker + consent, Braze at --latency-ms), the
    order on or off (`name`)."""
    run_id = f"o{int(time.time() * 1000) % 10**9}"
    work = Workdir(opts.keep_logs)
    procs = Processes(work.path)
    routes = work.path / "relay.toml"
    routes.write_text(CALL_ROUTES)
    client = redis_client()
    client.flushdb()
    sampler: Sampler | None = None
    try:
        sim_url = start_simulator(procs, opts.latency_ms)
        env = relay_env(sim_url, routes, free_port(), RELAY_ORDER_ACROSS_LANES=SWITCH[name])
        base = start_gunicorn(procs, env)
        export_backlog(base, run_id, opts.backlog, min(opts.backlog, BACKLOG_USERS))
        roles = [procs.start(role, procfile_command(role), env).pid for role in ("worker", "consent")]
        sampler = Sampler([Group("workers", roles)], client)
        sampler.start()  # the track lanes' length every 100 ms
        wait_for(lambda: track_waiting(client) < opts.backlog, 60, "the backlog to start draining")
        accepted, during = send_cases(opts, base, client, run_id)
        arrived: dict[Call, float] = {}
        since = 0

        def all_arrived() -> bool:
            nonlocal since
            procs.check_alive()
            found, since = braze_arrivals(sim_url, since)
            arrived.update(found)
            return all(call in arrived for call in accepted)

        wait_for(all_arrived, opts.drain_timeout, "every call at the simulator", interval=0.5)
        wait_for(lambda: not track_waiting(client), opts.drain_timeout, "the backlog to drain", 0.2)
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        procs.stop_all()
        with contextlib.suppress(Exception):
            client.flushdb()
        work.close()
    return call_figures(accepted, during, arrived, sampler.backlog)


def call_figures(
    accepted: dict[Call, float],
    during: set[Call],
    arrived: dict[Call, float],
    backlog: list[tuple[float, int]],
) -> dict[str, Any]:
    """Per kind: 2xx -> Braze (p50, p99, max, ms) of the calls accepted while the backlog waited, and
    the track records still waiting when each reached Braze; the backlog's drain time."""

    def waiting_at(moment: float) -> int:
        return min(backlog, key=lambda sample: abs(sample[0] - moment))[1] if backlog else 0

    figures: dict[str, Any] = {}
    for kind in KINDS:
        calls = [call for call in during if call[0] == kind]
        waits = [arrived[call] - accepted[call] for call in calls]
        figures[kind] = {
            "calls": len(calls),
            "p50_ms": 1000 * percentile(waits, 50),
            "p99_ms": 1000 * percentile(waits, 99),
            "max_ms": 1000 * max(waits, default=float("nan")),
            "waiting_at_arrival": median(waiting_at(arrived[call]) for call in calls),
        }
    started = next((t for t, n in backlog if n), float("nan"))
    ended = next((t for t, n in backlog if t > started and not n), float("nan"))
    figures["drain_s"] = ended - started
    figures["all_calls"] = len(accepted)
    return figures


def report(opts: argparse.Namespace, rounds: list[dict[str, Any]], calls: dict[str, dict[str, Any]]) -> None:
    """The figures, each round's ratios, and the targets."""
    edges, drains = [r["edge"] for r in rounds], [r["drain"] for r in rounds]
    print(f"order across lanes, {checkout()}, {machine()}; median of {opts.repeat}")
    print(f"== one-record track postbacks (wrk -c {opts.connections} -d {opts.seconds:g}s, Braze 50 ms)")
    for name in (ON, OFF):
        got = variant_medians(edges, name, OFF)
        print(
            f"  {name:<10} {got['req_per_s']:8.1f} accepted/s  {got['share']:5.3f}x off   web CPU "
            f"{got['web_cpu_ms']:.3f} ms/postback   (rest of the machine {got['other_cores']:.2f} cores)"
        )
    print(f"== drain of {opts.drain_backlog:,} custom events ({opts.workers} workers, Braze 50 ms)")
    for name in (ON, OFF):
        cpu = median(d[name]["worker_cpu_ms_per_1000"] for d in drains)
        rate = median(d[name]["records_per_s"] for d in drains)
        print(f"  {name:<10} worker CPU {cpu:6.1f} ms per 1,000 records   {rate:9,.0f} records/s")
    share = [e[ON]["req_per_s"] / e[OFF]["req_per_s"] for e in edges]
    web_cpu = [e[ON]["web_cpu_ms"] / e[OFF]["web_cpu_ms"] for e in edges]
    cpu_share = [d[ON]["worker_cpu_ms_per_1000"] / d[OFF]["worker_cpu_ms_per_1000"] for d in drains]
    for label, values in (
        ("postbacks/s", share),
        ("web CPU per postback", web_cpu),
        ("worker CPU per 1,000 records", cpu_share),
    ):
        print(f"  on/off, each round: {label} {', '.join(f'{v:.3f}' for v in values)}")
    print(
        f"== alias, identify, delete while {opts.backlog:,} track records drain (worker + consent, "
        f"Braze {opts.latency_ms:g} ms): the relay's 2xx -> Braze, calls accepted while the backlog waited"
    )
    for name, got in calls.items():
        print(f"  {name}: backlog drained in {got['drain_s']:.1f} s, {got['all_calls']} calls sent")
        for kind in KINDS:
            k = got[kind]
            print(
                f"    {kind:<9} {k['calls']:4d} calls  p50 {k['p50_ms']:5.0f} ms  p99 {k['p99_ms']:5.0f} ms  "
                f"max {k['max_ms']:5.0f} ms   track records still waiting when it landed: "
                f"{k['waiting_at_arrival']:,.0f} (median)"
            )
    targets(median(share), median(web_cpu), median(cpu_share), calls[ON]["delete"]["p99_ms"])


def targets(share: float, web_cpu: float, cpu_share: float, delete_p99_ms: float) -> None:
    """PASS or FAIL lines: the targets of the order across lanes."""
    print("== targets ==")
    for ok, text in (
        (share >= 0.95, f"postbacks/s with the order on >= 0.95x off: {share:.3f}x"),
        (web_cpu <= 1.05, f"  the same, from web CPU per postback (noise-proof companion): {web_cpu:.3f}x"),
        (cpu_share <= 1.05, f"worker CPU per 1,000 records on <= 1.05x off: {cpu_share:.3f}x"),
        (
            delete_p99_ms < 1000,
            f"a delete's p99, 2xx -> Braze, during the backlog < 1 s: {delete_p99_ms:.0f} ms",
        ),
    ):
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def main(argv: list[str] | None = None) -> int:
    """`--repeat` rounds of the costs and of the calls under a backlog; the report."""
    opts = options(argv)
    work = Workdir(opts.keep_logs)
    redis_procs = Processes(work.path)  # the bench's own redis-server, for every round
    try:
        if opts.own_redis:
            start_redis(redis_procs)
        rounds = []
        for number in range(opts.repeat):
            if opts.repeat > 1:
                print(f"round {number + 1} of {opts.repeat} ...", file=sys.stderr, flush=True)
            rounds.append(cost_round(opts, number))
        calls = {name: calls_run(opts, name) for name in ((ON, OFF) if opts.calls_off else (ON,))}
    finally:
        redis_procs.stop_all()
        work.close()
    report(opts, rounds, calls)
    return 0


if __name__ == "__main__":
    run(main)
