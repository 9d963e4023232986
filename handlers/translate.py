"""Records to Braze objects: each loaded record becomes one or more items bound for an endpoint.

An item carries the object to put in a request array, the endpoint and the request group it
belongs to, and the (user, field) pairs whose newest value must win (profile attributes and
subscription states), for the no-stale-overwrite check. One translator per record kind, registered
with `@translator(Kind.X)`; the registry is checked complete when this module loads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.envelope import Envelope
from relay.modes import Endpoint, Kind, KindRegistry, RateFamily, kind_of
from relay.routes import user_key

# Braze stores these twice if sent twice: never resend them after an ambiguous failure.
NOT_IDEMPOTENT = frozenset({"events", "purchases"})
DELETE_ARRAY = {
    "external_id": "external_ids",
    "braze_id": "braze_ids",
    "user_alias": "user_aliases",
    "email": "email_addresses",
    "phone": "phone_numbers",
}


@dataclass(slots=True)  # made for every record a drain job sends: slots make it cheaper to build and read
class Item:
    """One object for one Braze request array, and what it came from."""

    envelope: Envelope
    endpoint: Endpoint
    array: str
    obj: Any
    group: tuple[str, ...] = ()  # requests only hold items of one group (e.g. one subscription state)
    # The fields whose newest value must win (attributes, subscription states): each holds a
    # newest-value watermark per user in Redis (handlers/watermarks.py).
    watermarks: list[str] = field(default_factory=list)
    # The user whose profile the item changes (the key of its watermarks), and any other user it
    # also changes (an identify's alias, a new alias's external_id): no two requests in flight at
    # once carry items of the same user (handlers/packing.py `plan`).
    user: str = ""
    also: tuple[str, ...] = ()
    users: tuple[str, ...] = field(init=False)  # every user this item changes: `user`, then `also`

    def __post_init__(self) -> None:
        self.users = (self.user, *self.also) if self.user else self.also

    @property
    def family(self) -> RateFamily:
        """The rate-limit family of the endpoint."""
        return self.endpoint.rate_family


def braze_time(seconds: float) -> str:
    """UNIX seconds as the ISO-8601 UTC form Braze documents, to the millisecond, as datetime rounds."""
    fraction, whole = math.modf(seconds)
    micro = round(fraction * 1e6)
    if seconds < 0 or micro >= 1_000_000:  # rare: the long way, which carries the rounding over
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{_whole_second(int(whole))}.{micro // 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _whole_second(seconds: int) -> str:
    # Records of a chunk mostly share their second: formatting it once per second saves a datetime each.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


Translator = Callable[[Envelope], list[Item]]
TRANSLATORS: KindRegistry[Translator] = KindRegistry("translator")
translator = TRANSLATORS.register


def to_items(env: Envelope) -> list[Item]:
    """The Braze items of one record, by its kind (KeyError for a kind that does not exist)."""
    return TRANSLATORS[kind_of(env["kind"])](env)


def _uxo(env: Envelope) -> dict[str, bool]:
    return {"_update_existing_only": True} if env.get("uxo") else {}


@translator(Kind.EVENTS)
def event_items(env: Envelope) -> list[Item]:
    """user_track / custom_events: one event object."""
    rec = env["rec"]
    obj = {**rec["_id"], "name": rec["name"], "time": braze_time(rec["time"])}
    if env.get("uxo"):
        obj["_update_existing_only"] = True
    if rec.get("app_id"):
        obj["app_id"] = rec["app_id"]
    if rec["properties"]:
        obj["properties"] = rec["properties"]
    return [Item(env, Endpoint.TRACK, "events", obj, user=user_key(rec["_id"]))]


@translator(Kind.PURCHASES)
def purchase_items(env: Envelope) -> list[Item]:
    """user_track / purchases: one purchase object."""
    rec = env["rec"]
    obj = {**rec["_id"], "time": braze_time(rec["time"]), **_uxo(env)}
    for name in ("product_id", "currency", "price", "quantity", "app_id"):
        if rec.get(name) is not None:
            obj[name] = rec[name]
    if rec["properties"]:
        obj["properties"] = rec["properties"]
    return [Item(env, Endpoint.TRACK, "purchases", obj, user=user_key(rec["_id"]))]


@translator(Kind.ATTRIBUTES)
def attribute_items(env: Envelope) -> list[Item]:
    """user_track / user_profile_attributes: one attributes object; each attribute's newest value wins."""
    rec = env["rec"]
    ident = rec["_id"]
    # An alias-only profile is only created when _update_existing_only is false, said out loud.
    flag = {"_update_existing_only": bool(env.get("uxo"))} if "user_alias" in ident or env.get("uxo") else {}
    obj = {**ident, **rec["attributes"], **flag}
    return [
        Item(env, Endpoint.TRACK, "attributes", obj, watermarks=list(rec["attributes"]), user=user_key(ident))
    ]


@translator(Kind.ALIAS)
def alias_items(env: Envelope) -> list[Item]:
    """user_new_alias: one new alias, for an external_id or alias-only."""
    rec = env["rec"]
    obj = {"alias_name": rec["alias_name"], "alias_label": rec["alias_label"]}
    also: tuple[str, ...] = ()
    if rec.get("external_id"):
        obj["external_id"] = rec["external_id"]
        also = (user_key({"external_id": rec["external_id"]}),)
    alias = user_key({"user_alias": {"alias_name": rec["alias_name"], "alias_label": rec["alias_label"]}})
    return [Item(env, Endpoint.ALIAS, "user_aliases", obj, user=alias, also=also)]


IDENTIFY_ARRAY = {
    "user_alias": "aliases_to_identify",
    "email": "emails_to_identify",
    "phone": "phone_numbers_to_identify",
}


@translator(Kind.IDENTIFY)
def identify_items(env: Envelope) -> list[Item]:
    """user_identifying: an alias-, email- or phone-only user to attach to an external_id.

    https://www.braze.com/docs/api/endpoints/user_data/post_user_identify/: an email or phone goes
    with its `prioritization`, in `emails_to_identify` or `phone_numbers_to_identify`.
    """
    rec = env["rec"]
    name = next(key for key in IDENTIFY_ARRAY if key in rec)
    obj = {"external_id": rec["external_id"], name: rec[name]}
    if name != "user_alias":
        obj["prioritization"] = rec["prioritization"]
    user = user_key({"external_id": rec["external_id"]})
    return [
        Item(
            env, Endpoint.IDENTIFY, IDENTIFY_ARRAY[name], obj, user=user, also=(user_key({name: rec[name]}),)
        )
    ]


@translator(Kind.DELETE)
def delete_items(env: Envelope) -> list[Item]:
    """user_delete: one identifier in the array of its kind."""
    ident = env["rec"]["_id"]
    ((name, value),) = ident.items()
    if name == "email":
        value = {"email": value, "prioritization": ["most_recently_updated"]}
    return [Item(env, Endpoint.DELETE, DELETE_ARRAY[name], value, user=user_key(ident))]


@translator(Kind.CONSENT)
def consent_items(env: Envelope) -> list[Item]:
    """Consent: group states through the v2 endpoint; email/push states by the endpoint that fits.

    The v2 subscription endpoint and /email/status both work for an email or phone that has no
    Braze profile yet (Braze keeps the state for it); push_subscribe, and email_subscribe by
    external_id, go in /users/track attributes. The v2 endpoint takes no alias: an alias's states
    all go in /users/track attributes (`subscription_groups`), creating its alias-only profile.
    """
    rec = env["rec"]
    ident = rec["_id"]
    ((id_name, id_value),) = ident.items()
    user = user_key(ident)
    items = []
    if id_name == "user_alias":
        return alias_consent_items(env, user)
    if rec.get("subscription_group_id"):
        gid, state = rec["subscription_group_id"], rec["subscription_state"]
        ids = {"external_id": "external_ids", "email": "emails", "phone": "phones"}[id_name]
        # A group entry of a v2 body is one (group, state, kind of id, double opt-in or not).
        double_opt_in = "double_opt_in" if rec.get("double_opt_in") else ""
        items.append(
            Item(
                env,
                Endpoint.SUBSCRIPTION,
                ids,
                id_value,
                group=(gid, state, ids, double_opt_in),
                watermarks=[f"sub:{gid}"],
                user=user,
            )
        )
    if rec.get("email_subscribe") and id_name == "email":
        state = rec["email_subscribe"]
        items.append(
            Item(
                env,
                Endpoint.EMAIL_STATUS,
                "email",
                id_value,
                group=(state,),
                watermarks=["email_subscribe"],
                user=user,
            )
        )
    attrs = {name: rec[name] for name in ("email_subscribe", "push_subscribe") if rec.get(name)}
    if id_name == "email":
        attrs.pop("email_subscribe", None)
    if attrs:
        items.append(
            Item(env, Endpoint.TRACK, "attributes", {**ident, **attrs}, watermarks=list(attrs), user=user)
        )
    return items


def alias_consent_items(env: Envelope, user: str) -> list[Item]:
    """An alias's consent as /users/track attributes (`subscription_groups`, email/push states).

    The group state in an object of its own, so a group state older than one already sent (no stale
    overwrite) drops that whole object without taking the email/push states with it.
    """
    rec = env["rec"]
    ident = rec["_id"]
    # Braze defaults _update_existing_only to true for an alias: say false, or an unknown alias's
    # consent is dropped (the route's update_existing_only still wins).
    base = {**ident, "_update_existing_only": bool(env.get("uxo"))}
    items = []
    if rec.get("subscription_group_id"):
        gid, state = rec["subscription_group_id"], rec["subscription_state"]
        group = {"subscription_group_id": gid, "subscription_state": state}
        if rec.get("double_opt_in"):
            group["use_double_opt_in_logic"] = True
        obj = {**base, "subscription_groups": [group]}
        items.append(Item(env, Endpoint.TRACK, "attributes", obj, watermarks=[f"sub:{gid}"], user=user))
    attrs = {name: rec[name] for name in ("email_subscribe", "push_subscribe") if rec.get(name)}
    if attrs:
        items.append(
            Item(env, Endpoint.TRACK, "attributes", {**base, **attrs}, watermarks=list(attrs), user=user)
        )
    return items


def _who(ident: dict[str, Any]) -> str:
    """The user an identifier object names (its prioritization aside)."""
    return user_key({key: value for key, value in ident.items() if key != "prioritization"})


@translator(Kind.MERGE)
def merge_items(env: Envelope) -> list[Item]:
    """user_merge: one merge update (https://www.braze.com/docs/api/endpoints/user_data/post_users_merge/)."""
    rec = env["rec"]
    obj = {"identifier_to_merge": rec["merge"], "identifier_to_keep": rec["keep"]}
    return [
        Item(env, Endpoint.MERGE, "merge_updates", obj, user=_who(rec["keep"]), also=(_who(rec["merge"]),))
    ]


@translator(Kind.EXTERNAL_ID_RENAME)
def rename_items(env: Envelope) -> list[Item]:
    """external_id_rename: one rename object of /users/external_ids/rename."""
    rec = env["rec"]
    current, new = rec["current_external_id"], rec["new_external_id"]
    obj = {"current_external_id": current, "new_external_id": new}
    user = user_key({"external_id": current})
    return [
        Item(
            env,
            Endpoint.RENAME,
            "external_id_renames",
            obj,
            user=user,
            also=(user_key({"external_id": new}),),
        )
    ]


@translator(Kind.EXTERNAL_ID_REMOVE)
def remove_items(env: Envelope) -> list[Item]:
    """external_id_remove: one deprecated external_id for /users/external_ids/remove."""
    external_id = env["rec"]["external_id"]
    return [
        Item(env, Endpoint.REMOVE, "external_ids", external_id, user=user_key({"external_id": external_id}))
    ]


@translator(Kind.ALIAS_UPDATE)
def alias_update_items(env: Envelope) -> list[Item]:
    """alias_update: one update user alias object of /users/alias/update."""
    rec = env["rec"]
    obj = {name: rec[name] for name in ("alias_label", "old_alias_name", "new_alias_name")}
    old, new = (
        {"alias_name": rec[name], "alias_label": rec["alias_label"]}
        for name in ("old_alias_name", "new_alias_name")
    )
    return [
        Item(
            env,
            Endpoint.ALIAS_UPDATE,
            "alias_updates",
            obj,
            user=user_key({"user_alias": old}),
            also=(user_key({"user_alias": new}),),
        )
    ]


@translator(Kind.CATALOG)
def catalog_items(env: Envelope) -> list[Item]:
    """catalog_items: one item for PUT /catalogs/{catalog}/items (upsert), or its id for DELETE.

    The item's newest record wins (its watermark `item`), an upsert or a delete alike, and no two
    requests in flight carry one item: its `user` is the item.
    """
    rec = env["rec"]
    catalog = rec["catalog"]
    method = "DELETE" if rec.get("delete") else "PUT"
    obj = {"id": rec["id"]} if method == "DELETE" else {"id": rec["id"], **rec["fields"]}
    user = f"catalog:{catalog}:{rec['id']}"
    return [
        Item(
            env, Endpoint.CATALOG_ITEMS, "items", obj, group=(catalog, method), watermarks=["item"], user=user
        )
    ]


TRANSLATORS.complete()
