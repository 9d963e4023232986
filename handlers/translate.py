"""Records to Braze objects: each loaded record becomes one or more items bound for an endpoint.

An item carries the object to put in a request array, the endpoint and the request group it
belongs to, and the (user, field) pairs whose newest value must win (profile attributes and
subscription states), for the no-stale-overwrite check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.envelope import Envelope
from relay.routes import user_key

TRACK = "/users/track"
ALIAS = "/users/alias/new"
IDENTIFY = "/users/identify"
DELETE = "/users/delete"
SUBSCRIPTION = "/v2/subscription/status/set"
EMAIL_STATUS = "/email/status"

# Which Braze rate-limit family each endpoint counts against (shared by every worker).
FAMILY = {
    TRACK: "track",
    ALIAS: "users",
    IDENTIFY: "users",
    DELETE: "users",
    SUBSCRIPTION: "subscription",
    EMAIL_STATUS: "default",
}
# Braze stores these twice if sent twice: never resend them after an ambiguous failure.
NOT_IDEMPOTENT = frozenset({"events", "purchases"})
DELETE_ARRAY = {
    "external_id": "external_ids",
    "braze_id": "braze_ids",
    "user_alias": "user_aliases",
    "email": "email_addresses",
    "phone": "phone_numbers",
}


@dataclass
class Item:
    """One object for one Braze request array, and what it came from."""

    envelope: Envelope
    endpoint: str
    array: str
    obj: Any
    group: tuple[str, ...] = ()  # requests only hold items of one group (e.g. one subscription state)
    claims: list[str] = field(default_factory=list)  # fields whose newest value must win
    user: str = ""  # the user key of those claims

    @property
    def family(self) -> str:
        """The rate-limit family of the endpoint."""
        return FAMILY[self.endpoint]


def braze_time(seconds: float) -> str:
    """UNIX seconds as the ISO-8601 UTC form Braze documents."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_items(env: Envelope) -> list[Item]:
    """The Braze items of one record, by its kind."""
    rec, kind = env["rec"], env["kind"]
    uxo = {"_update_existing_only": True} if env.get("uxo") else {}
    if kind == "events":
        obj = {**rec["_id"], "name": rec["name"], "time": braze_time(rec["time"]), **uxo}
        if rec.get("app_id"):
            obj["app_id"] = rec["app_id"]
        if rec["properties"]:
            obj["properties"] = rec["properties"]
        return [Item(env, TRACK, "events", obj)]
    if kind == "purchases":
        obj = {**rec["_id"], "time": braze_time(rec["time"]), **uxo}
        for name in ("product_id", "currency", "price", "quantity", "app_id"):
            if rec.get(name) is not None:
                obj[name] = rec[name]
        if rec["properties"]:
            obj["properties"] = rec["properties"]
        return [Item(env, TRACK, "purchases", obj)]
    if kind == "attributes":
        ident = rec["_id"]
        # An alias-only profile is only created when _update_existing_only is false, said out loud.
        flag = {"_update_existing_only": bool(env.get("uxo"))} if "user_alias" in ident or uxo else {}
        obj = {**ident, **rec["attributes"], **flag}
        return [Item(env, TRACK, "attributes", obj, claims=list(rec["attributes"]), user=user_key(ident))]
    if kind == "alias":
        obj = {"alias_name": rec["alias_name"], "alias_label": rec["alias_label"]}
        if rec.get("external_id"):
            obj["external_id"] = rec["external_id"]
        return [Item(env, ALIAS, "user_aliases", obj)]
    if kind == "identify":
        obj = {"external_id": rec["external_id"], "user_alias": rec["user_alias"]}
        return [Item(env, IDENTIFY, "aliases_to_identify", obj)]
    if kind == "delete":
        ((name, value),) = rec["_id"].items()
        if name == "email":
            value = {"email": value, "prioritization": ["most_recently_updated"]}
        return [Item(env, DELETE, DELETE_ARRAY[name], value)]
    if kind == "subscription":
        return subscription_items(env)
    raise ValueError(f"unknown record kind {kind!r}")


def subscription_items(env: Envelope) -> list[Item]:
    """Consent: group states through the v2 endpoint; email/push states by the endpoint that fits.

    The v2 subscription endpoint and /email/status both work for an email or phone that has no
    Braze profile yet (Braze keeps the state for it); push_subscribe, and email_subscribe by
    external_id, go in /users/track attributes.
    """
    rec = env["rec"]
    ident = rec["_id"]
    ((id_name, id_value),) = ident.items()
    user = user_key(ident)
    items = []
    if rec.get("subscription_group_id"):
        gid, state = rec["subscription_group_id"], rec["subscription_state"]
        ids = {"external_id": "external_ids", "email": "emails", "phone": "phones"}[id_name]
        items.append(
            Item(env, SUBSCRIPTION, ids, id_value, group=(gid, state, ids), claims=[f"sub:{gid}"], user=user)
        )
    if rec.get("email_subscribe") and id_name == "email":
        state = rec["email_subscribe"]
        items.append(
            Item(env, EMAIL_STATUS, "email", id_value, group=(state,), claims=["email_subscribe"], user=user)
        )
    attrs = {name: rec[name] for name in ("email_subscribe", "push_subscribe") if rec.get(name)}
    if id_name == "email":
        attrs.pop("email_subscribe", None)
    if attrs:
        items.append(Item(env, TRACK, "attributes", {**ident, **attrs}, claims=list(attrs), user=user))
    return items
