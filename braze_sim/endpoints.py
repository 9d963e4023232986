"""The Braze endpoints: check a parsed JSON body, change the state, return (status, answer).

`ENDPOINTS` maps each path to its rate-limit family and handler. A handler raises `Invalid` for a
request-level 400; item-level problems are reported in `errors` with `input_array` and `index`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from braze_sim.profile import Identifier, Target
from braze_sim.validate import (
    ARRAYS,
    GROUP_STATES,
    SUBSCRIBE_STATES,
    alias_of,
    identifier_of,
    is_text,
    over_limit,
    validate_track,
)

if TYPE_CHECKING:
    from braze_sim.server import Simulator

Answer = tuple[int, dict[str, Any]]
Parsed = TypeVar("Parsed")
SUCCESS = {"message": "success"}
NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
TOO_MANY = "The max number of external_ids and aliases per request was exceeded"
EMAIL_OR_PHONE = "Either an email address or a phone number should be provided, but not both."
MAX_IDS = 50
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
# Braze does not state a limit on groups per /v2/subscription/status/set request; 25 is what
# rudder-transformer uses (SUBSCRIPTION_BRAZE_MAX_REQ_COUNT) and is unverified.
MAX_V2_GROUPS = 25
IDENTIFY_ARRAYS = {
    "aliases_to_identify": "user_alias",
    "emails_to_identify": "email",
    "phone_numbers_to_identify": "phone",
}
DELETE_ARRAYS = {
    "external_ids": "external_id",
    "braze_ids": "braze_id",
    "user_aliases": "user_alias",
    "email_addresses": "email",
    "phone_numbers": "phone",
}


class Invalid(Exception):
    """A request-level problem answered with 400 and this message."""


class Endpoint(NamedTuple):
    """A Braze path's rate-limit family, handler and methods."""

    family: str
    handle: Callable[[Simulator, dict[str, Any]], Answer]
    methods: tuple[str, ...] = ("POST",)


def track(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/track: validate per item, apply the valid ones, report the rest."""
    arrays = {name: _list(body, name) for name in ARRAYS}
    too_long = over_limit(arrays, sim.config.per_array_limit, sim.config.combined_limit)
    if too_long:
        return 400, {"message": "Max Input Length Exceeded", "errors": too_long}
    items, errors = validate_track(arrays, sim.faults.reject_item)
    if not items:
        return 400, {"message": NO_VALID_DATA, "errors": errors}
    sim.state.apply_track(items)
    answer: dict[str, Any] = dict(SUCCESS)
    for name in ARRAYS:
        if count := sum(1 for array, _, _ in items if array == name):
            answer[f"{name}_processed"] = count
    if errors:
        answer["errors"] = errors
    return 201, answer


def alias_new(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/alias/new: attach aliases to known users or create alias-only profiles."""
    aliases = _capped(body, "user_aliases")
    valid, errors = _sort(aliases, "user_aliases", _new_alias)
    for alias, external_id in valid:
        sim.state.add_alias(alias, external_id)
    return _processed(len(valid), errors, "aliases_processed")


def identify(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/identify: give alias-, email- or phone-only profiles an external_id."""
    arrays = {name: _list(body, name) for name in IDENTIFY_ARRAYS}
    if sum(len(items) for items in arrays.values()) > MAX_IDS:
        raise Invalid(TOO_MANY)
    if not any(arrays.values()):
        raise Invalid(
            "'aliases_to_identify', 'emails_to_identify' or 'phone_numbers_to_identify' is required"
        )
    done = 0
    errors: list[dict[str, Any]] = []
    for name, kind in IDENTIFY_ARRAYS.items():
        valid, bad = _sort(arrays[name], name, partial(_identification, kind=kind))
        for external_id, source, prioritization in valid:
            sim.state.identify(external_id, source, prioritization)
        done, errors = done + len(valid), errors + bad
    return _processed(done, errors, "aliases_processed")


def delete(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/delete: remove the named profiles; `deleted` counts identifiers queued, as Braze does."""
    targets: list[Target] = []
    for key, kind in DELETE_ARRAYS.items():
        for entry in _list(body, key):
            # Contacts come as plain strings or as {email|phone, prioritization} objects.
            contact_object = kind in ("email", "phone") and isinstance(entry, dict)
            found = identifier_of(entry if contact_object else {kind: entry})
            if isinstance(found, str) or found[0] != kind:
                raise Invalid(f"'{key}' has an invalid entry")
            targets.append((found, entry.get("prioritization") if isinstance(entry, dict) else None))
    if not targets:
        raise Invalid(
            "'external_ids', 'braze_ids', 'user_aliases', 'email_addresses' or 'phone_numbers' is required"
        )
    if len(targets) > MAX_IDS:
        raise Invalid(TOO_MANY)
    for ident, prioritization in targets:
        sim.state.delete(ident, prioritization)
    return 201, {"deleted": len(targets), **SUCCESS}


def merge(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/merge: fold each identifier_to_merge into its identifier_to_keep (202, as Braze)."""
    updates = body.get("merge_updates")
    if not isinstance(updates, list) or not all(isinstance(u, dict) for u in updates):
        raise Invalid("'merge_updates' must be an array of objects")
    if len(updates) > MAX_IDS:
        raise Invalid("a single request may not contain more than 50 merge updates")
    pairs = [(_merge_side(u, "identifier_to_merge"), _merge_side(u, "identifier_to_keep")) for u in updates]
    for to_merge, to_keep in pairs:
        sim.state.merge(to_merge, to_keep)
    return 202, dict(SUCCESS)


def rename(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/external_ids/rename: each rename, or its error by index in `rename_errors`.

    https://www.braze.com/docs/api/endpoints/user_data/external_id_migration/post_external_ids_rename/:
    the message is `success` for any valid request; "Error messages in the rename_errors field will
    reference the index of the object in the array of the original request" ([index, message] here).
    The page gives no status code: 201, as the other user data endpoints answer.
    """
    renames = _capped(body, "external_id_renames")
    done: list[str] = []
    errors: list[list[Any]] = []
    for index, entry in enumerate(renames):
        current = entry.get("current_external_id") if isinstance(entry, dict) else None
        new = entry.get("new_external_id") if isinstance(entry, dict) else None
        if (
            not isinstance(current, str)
            or not isinstance(new, str)
            or not current
            or not new
            or current == new
        ):
            errors.append(
                [index, "'current_external_id' and 'new_external_id' must be two different strings"]
            )
        elif (problem := sim.state.rename_external_id(current, new)) is not None:
            errors.append([index, problem])
        else:
            done.append(new)
    return 201, {**SUCCESS, "external_ids": done, "rename_errors": errors}


def remove(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/external_ids/remove: each removal, or its error by index in `removal_errors`
    (https://www.braze.com/docs/api/endpoints/user_data/external_id_migration/post_external_ids_remove/:
    only deprecated ids can be removed)."""
    ids = _capped(body, "external_ids")
    removed: list[str] = []
    errors: list[list[Any]] = []
    for index, external_id in enumerate(ids):
        problem = "'external_ids' must hold strings" if not is_text(external_id) else None
        problem = problem or sim.state.remove_external_id(external_id)
        if problem:
            errors.append([index, problem])
        else:
            removed.append(external_id)
    return 201, {**SUCCESS, "removed_ids": removed, "removal_errors": errors}


def alias_update(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /users/alias/update: rename aliases by label (https://www.braze.com/docs/api/endpoints/user_data/
    post_users_alias_update/: all three fields required; an alias that does not exist is not updated).
    The page documents no answer: 201 success, as /users/alias/new, naming a malformed object by index."""
    updates = _capped(body, "alias_updates")
    valid, errors = _sort(updates, "alias_updates", _alias_update)
    for label, old, new in valid:
        sim.state.update_alias(label, old, new)
    return _processed(len(valid), errors, "aliases_processed")


def subscription_v1(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /subscription/status/set: one group, one state, up to 50 external_ids and emails or phones."""
    _set_group(sim, body, external_ids="external_id", emails="email", phones="phone")
    return 201, dict(SUCCESS)


def subscription_v2(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /v2/subscription/status/set: up to 25 groups, each with up to 50 of each kind of user."""
    groups = body.get("subscription_groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise Invalid("'subscription_groups' must be a non-empty array of objects")
    if len(groups) > MAX_V2_GROUPS:
        raise Invalid(f"at most {MAX_V2_GROUPS} subscription groups are allowed per request")
    for group in groups:  # check every group before changing any
        _set_group(sim, group, external_ids="external_ids", emails="emails", phones="phones", apply=False)
    for group in groups:
        _set_group(sim, group, external_ids="external_ids", emails="emails", phones="phones")
    return 201, dict(SUCCESS)


def email_status(sim: Simulator, body: dict[str, Any]) -> Answer:
    """POST /email/status: set email_subscribe for up to 50 addresses, known or not."""
    emails = _strings(body, "email")
    if not emails:
        raise Invalid("'email' is required")
    if len(emails) > MAX_IDS:
        raise Invalid(TOO_MANY)
    if body.get("subscription_state") not in SUBSCRIBE_STATES:
        raise Invalid("'subscription_state' must be 'subscribed', 'unsubscribed' or 'opted_in'")
    sim.state.set_email_subscribe(emails, body["subscription_state"])
    return 201, dict(SUCCESS)


ENDPOINTS: dict[str, Endpoint] = {
    "/users/track": Endpoint("track", track),
    "/users/alias/new": Endpoint("users", alias_new),
    "/users/identify": Endpoint("users", identify),
    "/users/delete": Endpoint("users", delete),
    "/users/merge": Endpoint("users", merge),
    "/users/alias/update": Endpoint("users", alias_update),
    "/users/external_ids/rename": Endpoint("rename", rename),
    "/users/external_ids/remove": Endpoint("remove", remove),
    "/subscription/status/set": Endpoint("subscription", subscription_v1),
    "/v2/subscription/status/set": Endpoint("subscription", subscription_v2),
    "/email/status": Endpoint("default", email_status),
}


CATALOG_ITEMS = re.compile(r"^/catalogs/([^/]+)/items$")
CATALOG_METHODS = ("PUT", "DELETE")


def endpoint_for(path: str, method: str) -> Endpoint | None:
    """The endpoint answering a path (a catalog's items: PUT and DELETE, by the catalog in the path)."""
    found = ENDPOINTS.get(path)
    if found is not None:
        return found
    match = CATALOG_ITEMS.match(path)
    if match is None:
        return None

    def items(sim: Simulator, body: dict[str, Any]) -> Answer:
        return sim.catalogs.handle(match.group(1), method, body)

    return Endpoint("catalog", items, CATALOG_METHODS)


def _set_group(sim: Simulator, body: dict[str, Any], *, apply: bool = True, **keys: str) -> None:
    group_id, state = body.get("subscription_group_id"), body.get("subscription_state")
    if not isinstance(group_id, str) or not group_id:
        raise Invalid("'subscription_group_id' is required")
    if state not in GROUP_STATES:
        raise Invalid("'subscription_state' must be 'subscribed' or 'unsubscribed'")
    users = {name: _strings(body, key) for name, key in keys.items()}
    if users["emails"] and users["phones"]:
        raise Invalid(EMAIL_OR_PHONE)
    if not any(users.values()):
        raise Invalid(f"'{keys['external_ids']}', '{keys['emails']}' or '{keys['phones']}' is required")
    if any(len(values) > MAX_IDS for values in users.values()):
        raise Invalid(TOO_MANY)
    # https://www.braze.com/docs/api/endpoints/subscription_groups/post_update_user_subscription_group_status_v2/:
    # phones "in E.164 format"; `use_double_opt_in_logic` an optional boolean.
    if not all(E164.match(phone) for phone in users["phones"]):
        raise Invalid(f"'{keys['phones']}' must be in E.164 format")
    if not isinstance(body.get("use_double_opt_in_logic", False), bool):
        raise Invalid("'use_double_opt_in_logic' must be a boolean")
    if apply:
        sim.state.set_subscription_group(group_id, state, **users)


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"'{key}' must be an array")
    return value


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    values = [value] if isinstance(value, str) else _list(body, key)
    if not all(is_text(v) for v in values):
        raise Invalid(f"'{key}' must be a string or an array of strings")
    return values


def _capped(body: dict[str, Any], key: str) -> list[Any]:
    items = _list(body, key)
    if not items:
        raise Invalid(f"'{key}' must be a non-empty array")
    if len(items) > MAX_IDS:
        raise Invalid(TOO_MANY)
    return items


def _sort(
    items: list[Any], name: str, parse: Callable[[Any], Parsed | str]
) -> tuple[list[Parsed], list[dict[str, Any]]]:
    # `parse` returns the entry's useful parts, or an error type reported by array and index.
    valid: list[Parsed] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        parsed = parse(item)
        if isinstance(parsed, str):
            errors.append({"type": parsed, "input_array": name, "index": index})
        else:
            valid.append(parsed)
    return valid, errors


def _processed(count: int, errors: list[dict[str, Any]], key: str) -> Answer:
    if count == 0:
        return 400, {"message": "No valid entries were provided", "errors": errors}
    answer: dict[str, Any] = {key: count, **SUCCESS}
    if errors:
        answer["errors"] = errors
    return 201, answer


def _merge_side(update: dict[str, Any], key: str) -> Target:
    side = update.get(key)
    if not isinstance(side, dict):
        raise Invalid(f"'{key}' must be an object")
    found = identifier_of(side)
    if isinstance(found, str):
        raise Invalid(found)
    return found, side.get("prioritization")


def _new_alias(item: Any) -> tuple[tuple[str, str], str | None] | str:
    alias = alias_of(item) if isinstance(item, dict) else None
    if alias is None:
        return "'alias_name' and 'alias_label' are required"
    external_id = item.get("external_id")
    if external_id is not None and not is_text(external_id):
        return "'external_id' must be a string"
    return alias, external_id


def _alias_update(item: Any) -> tuple[str, str, str] | str:
    names = ("alias_label", "old_alias_name", "new_alias_name")
    if not isinstance(item, dict) or not all(is_text(item.get(name)) for name in names):
        return "'alias_label', 'old_alias_name' and 'new_alias_name' are required"
    return item["alias_label"], item["old_alias_name"], item["new_alias_name"]


def _identification(item: Any, kind: str) -> tuple[str, Identifier, list[str] | None] | str:
    if not isinstance(item, dict) or not is_text(item.get("external_id")):
        return "'external_id' is required"
    if kind == "user_alias":
        alias = alias_of(item.get("user_alias"))
        if alias is None:
            return "'user_alias' with 'alias_name' and 'alias_label' is required"
        return item["external_id"], ("user_alias", alias), None
    if not is_text(item.get(kind)):
        return f"'{kind}' is required"
    return item["external_id"], (kind, item[kind]), item.get("prioritization")
