"""The tests' own helpers: the test environment (keys, routes, Redis), posting records the way each
caller does (TD postback, TD ingestion, TD export, webhook), and records made by the edge's schemas."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
from flask import Flask
from standardwebhooks.webhooks import Webhook

from relay import lanes, store
from relay.config import Settings
from relay.envelope import Envelope
from relay.lanes import Lane

KEYS = store.keys("default")  # the keys of the tests' one workspace
WORKSPACES = ["default"]


def worker_number() -> int:
    """The number of this test process when pytest-xdist runs several (gw0, gw1, ...); 0 alone."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def own_database(url: str) -> str:
    """The URL with this test process's database: the URL's own (0 if it names none) plus the process's
    number, so that processes running tests at once never empty one another's database."""
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + worker_number()
    return urlunsplit(parts._replace(path=f"/{database}"))


REDIS_URL = own_database(os.environ.get("RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"))
BRAZE_KEY = "test-braze-key-5f1c"
WRITE_KEY = "test-write-key-81aa"
OTHER_WRITE_KEY = "test-write-key-rotated-22bb"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_KEY = "test-admin-key-3c9e0b"  # the operator's pages (RELAY_ADMIN_KEYS) ...
ROTATED_ADMIN_KEY = "test-admin-key-next-71d0"  # ... and the key rotated in beside it
EU_BRAZE_KEY = "eu-braze-api-key-77e2"  # a second workspace's Braze key (braze_api_key_env = "EU_BRAZE_KEY")
SAMPLES = Path(__file__).parent / "samples"
GOOD_ROUTE = """
[routes.app_events]
database = "marketing"
table = "app_events"
mode = "user_track"
track_record_type = "custom_events"
"""  # an operator's first routes file: the `config_env` fixture's

ROUTES = """
[routes.events]
database = "db"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
pre_formatted_fields = ["properties", "tags"]

[routes.purchases]
database = "db"
table = "purchases"
mode = "user_track"
track_record_type = "purchases"

[routes.profiles]
database = "db"
table = "profiles"
mode = "user_track"
track_record_type = "user_profile_attributes"

[routes.profiles_skip]
database = "db"
table = "profiles_skip"
mode = "user_track"
track_record_type = "user_profile_attributes"
skip_on_invalid_records = true

[routes.aliases]
database = "db"
table = "aliases"
mode = "user_new_alias"

[routes.identify]
database = "db"
table = "identify"
mode = "user_identifying"

[routes.deletes]
database = "db"
table = "deletes"
mode = "user_delete"

[routes.consent]
database = "db"
table = "consent"
mode = "user_subscription"

[routes.merges]
database = "db"
table = "merges"
mode = "user_merge"

[routes.renames]
database = "db"
table = "renames"
mode = "external_id_rename"

[routes.removals]
database = "db"
table = "removals"
mode = "external_id_remove"

[routes.alias_updates]
database = "db"
table = "alias_updates"
mode = "alias_update"

[routes.restaurants]
database = "db"
table = "restaurants"
mode = "catalog_items"
catalog = "restaurants"
"""


def relay_environment(redis_url: str, braze_url: str, routes_path: Path) -> dict[str, str]:
    """The variables an operator would set to run the relay against this simulator."""
    return {
        "REDIS_URL": redis_url,
        "BRAZE_REST_ENDPOINT": braze_url,
        "BRAZE_API_KEY": BRAZE_KEY,
        "RELAY_CONFIG": str(routes_path),
        "RELAY_WRITE_KEYS": f"{WRITE_KEY},{OTHER_WRITE_KEY}",
        "RELAY_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "RELAY_LINGER_MS": "20",
        "RELAY_RETRY_BASE_S": "0.05",
        "RELAY_RETRY_CAP_S": "0.2",
        "RELAY_MAX_ATTEMPTS": "8",
        "RELAY_LEASE_S": "3",
        "RELAY_SLICE_S": "2",
        "BRAZE_READ_TIMEOUT_S": "2",
    }


def create_app_for(settings: Settings) -> Flask:
    """The app factory, imported late so a collection error names the test that needs it."""
    from receiver import create_app

    return create_app(settings)


def caught_up(client: redis.Redis, watched: list[str], mark: str) -> None:
    """Wait until MONITOR (the `watched` fixture) has shown every command sent before this one, an ECHO."""
    client.echo(f"relay-test-{mark}")
    deadline = time.monotonic() + 10
    while not any(f"relay-test-{mark}" in line for line in watched):
        assert time.monotonic() < deadline, "MONITOR fell behind"
        time.sleep(0.01)


def clock_past(moment: float) -> None:
    """Return once the clock reads later than `moment`: whatever happens next is stamped after it."""
    while time.time() <= moment:
        time.sleep(0.001)


def lanes_busy(client: redis.Redis) -> bool:
    """True while any lane holds records or retries."""
    known = Lane.in_workspaces(client, store.workspaces(client, ["default"]))
    return any(row.waiting or row.retrying for row in lanes.states(client, known))


def lanes_idle(client: redis.Redis) -> bool:
    """True once no lane holds records or retries and no drain job owns one: nothing more can be sent."""
    known = Lane.in_workspaces(client, store.workspaces(client, ["default"]))
    return not any(row.waiting or row.retrying or row.owned for row in lanes.states(client, known))


SHAPES = ("postback", "ingest", "export", "webhook")


def route_table(route: str) -> str:
    """The table the routes file gives a route."""
    section = ROUTES.split(f"[routes.{route}]")[1]
    return section.split('table = "')[1].split('"')[0]


def signed_headers(
    body: bytes, *, secret: str = WEBHOOK_SECRET, msg_id: str | None = None, timestamp: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for a body, signed with the spec's own library."""
    from datetime import UTC, datetime

    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(timestamp if timestamp is not None else time.time(), UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def requests_for(shape: str, route: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The HTTP requests (method, path, headers, body bytes) a caller of this shape sends."""
    table = route_table(route)
    json_type = {"Content-Type": "application/json"}
    if shape == "postback":
        return [
            {
                "method": "POST",
                "path": f"/postback/v3/event/db/{table}",
                "headers": {**json_type, "X-TD-Write-Key": WRITE_KEY},
                "body": json.dumps(record).encode(),
            }
            for record in records
        ]
    if shape == "ingest":
        return [
            {
                "method": "POST",
                "path": f"/db/{table}",
                "headers": {
                    "Content-Type": "application/vnd.treasuredata.v1+json",
                    "Authorization": f"TD1 {WRITE_KEY}",
                },
                "body": json.dumps({"records": records}).encode(),
            }
        ]
    if shape == "export":
        names = list(dict.fromkeys(key for record in records for key in record))
        rows = [[record.get(name) for name in names] for record in records]
        basic = base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()
        body = {"column_names": names, "column_types": ["string"] * len(names), "data": rows}
        return [
            {
                "method": "PUT",
                "path": f"/export/{route}",
                "headers": {**json_type, "Authorization": f"Basic {basic}"},
                "body": json.dumps(body).encode(),
            }
        ]
    if shape == "webhook":
        body = json.dumps(records).encode()
        return [
            {"method": "POST", "path": f"/webhooks/{route}", "headers": signed_headers(body), "body": body}
        ]
    raise ValueError(shape)


def envelopes(
    mode: str, records: list[dict[str, Any]], *, track_record_type: str | None = None, **route: Any
) -> list[Envelope]:
    """Records loaded by the route's real schema and wrapped as the edge queues them (no Redis)."""
    from receiver.enqueue import Batch
    from receiver.records.schemas import schema_for
    from relay.routes import Route

    target = Route("unit", mode, track_record_type=track_record_type, **route)
    schema = schema_for(target)
    batch = Batch(route=target, request_id="req")
    return [batch.envelope(index, schema.load(record)) for index, record in enumerate(records)]


class PostbackLoad(threading.Thread):
    """One-record postbacks from one client, one after the other, spread over `users` users named
    `{prefix}-{n}`, each event carrying its `seq`; when each acknowledged one was sent and when its 2xx
    came (monotonic), how many were refused with 503, and any other answer."""

    def __init__(self, base: str, prefix: str, users: int) -> None:
        super().__init__(daemon=True)
        self.base, self.prefix, self.users = base, prefix, users
        self.acknowledged: dict[int, tuple[float, float]] = {}  # seq -> (when sent, when its 2xx came)
        self.refused = 0  # 503s while Redis was away, refusing, or without a primary
        self.unexpected: list[int | None] = []  # any other answer (a 500 above all), or none
        self.stopping = threading.Event()

    def answered(self) -> int:
        """How many requests got an answer so far."""
        return len(self.acknowledged) + self.refused + len(self.unexpected)

    def run(self) -> None:
        """Post until stopped."""
        session = requests.Session()
        seq = 0
        while not self.stopping.is_set():
            body = {"external_id": f"{self.prefix}-{seq % self.users}", "name": "tick", "seq": seq}
            sent = time.monotonic()
            try:
                answer = session.post(
                    f"{self.base}/postback/v3/event/db/events",
                    json=body,
                    headers={"X-TD-Write-Key": WRITE_KEY},
                    timeout=30,  # a web retrying a loading Redis answers 503 within seconds, not at once
                )
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code == 200:
                self.acknowledged[seq] = (sent, time.monotonic())
            elif answer is not None and answer.status_code == 503:
                self.refused += 1
            else:
                self.unexpected.append(answer.status_code if answer is not None else None)
            seq += 1

    def delivered(self, braze: Any) -> set[int]:
        """The `seq` of every event of the load's users the simulator holds."""
        found = set()
        for user in range(self.users):
            profile = braze.state.profile(f"{self.prefix}-{user}") or {}
            found.update(event["properties"]["seq"] for event in profile.get("events", []))
        return found
