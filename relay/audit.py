"""The audit trail: per identifier, when each consent change and delete was received and how it ended.

Entries are kept under a hash of the identifier (no raw email or phone in key names or logs), newest
first, at most `KEEP` per identifier, for `audit_ttl_s` after the last change. Events: `received`
(the edge stored it), `confirmed` (Braze accepted it; `again` for a consent change sent once more
after the user's earlier records), `retrying`, `superseded` (a newer state for the same user and
group was already sent; `reason: deleted` for any record of the user not sent because the user's
delete was accepted after it), `dead_lettered` (with the reason).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

import redis

from relay import store
from relay.envelope import Envelope
from relay.modes import Kind
from relay.routes import user_key
from relay.text import dumps as safe_dumps
from relay.text import loads as safe_loads

KEEP = 200
AUDITED = frozenset({Kind.CONSENT, Kind.DELETE})  # kinds whose every step is kept in the user's trail
CHANGE_FIELDS = ("subscription_group_id", "subscription_state", "email_subscribe", "push_subscribe")


def audit_key(workspace: str, ident: dict[str, Any]) -> str:
    """The Redis key of one identifier's trail: a hash, so the key itself names no one."""
    return store.keys(workspace).audit(store.digest(workspace, user_key(ident)))


def note(pipe: Any, envelope: Envelope, event: str, ttl_s: int, **details: Any) -> None:
    """Queue one audit event for a record of its user (the caller's transaction); records with no
    single identifier (an alias creation, an identify) have no trail of their own."""
    record = envelope["rec"]
    if not isinstance(record.get("_id"), dict):
        return
    entry = {
        "at": time.time(),
        "event": event,
        "kind": envelope.get("kind"),
        "record": envelope["id"],
        "route": envelope["route"],
        "time": datetime.fromtimestamp(envelope["t"], UTC).isoformat(),
        "changes": {name: record[name] for name in CHANGE_FIELDS if record.get(name)},
        **details,
    }
    key = audit_key(envelope["ws"], record["_id"])
    pipe.lpush(key, safe_dumps(entry))
    pipe.ltrim(key, 0, KEEP - 1)
    pipe.expire(key, ttl_s)


def history(client: redis.Redis, workspace: str, ident: dict[str, Any]) -> list[dict[str, Any]]:
    """One identifier's consent events, newest first."""
    raws = cast("list[bytes]", client.lrange(audit_key(workspace, ident), 0, -1))
    return [safe_loads(raw) for raw in raws]
