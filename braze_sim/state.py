"""The simulated Braze user store: profiles, orphaned subscription states and deletions, behind one lock.

Identifiers are `(kind, value)` pairs (see braze_sim.profile).

Reading (every result is a JSON-safe deep copy, so callers may keep or change it):
    profile(external_id) -> dict | None       find(**one_identifier) -> dict | None
    find_all(**one_identifier) -> list[dict]  profiles() -> list[dict]     count() -> int
    snapshot() -> {"profiles", "orphans", "deleted", "identified_aliases"}
A profile dict has braze_id, external_id, user_aliases [{alias_name, alias_label}], attributes (email
and phone included), email_subscribe, push_subscribe, subscription_groups {id: state}, events, purchases.
`find` takes one keyword: external_id, braze_id, user_alias={"alias_name","alias_label"}, email or phone.

Writing (the endpoints call these; tests may call them to seed): seed_profile, apply_track, add_alias,
identify, merge, rename_external_id, remove_external_id, update_alias, delete, set_subscription_group,
set_email_subscribe, reset.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from braze_sim.attributes import apply_attribute
from braze_sim.profile import Identifier, Profile, Target, TrackItem, contact_key, identifier, shown

SUBSCRIBE_FIELDS = ("email_subscribe", "push_subscribe")
# Keys of an attributes object that steer the update instead of naming an attribute.
CONTROL_KEYS = frozenset(
    {"external_id", "braze_id", "user_alias", "_update_existing_only", "_merge_objects", "push_token_import"}
)


class BrazeState:
    """Thread-safe user store; every public method takes the one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every profile, orphaned state, deletion and identification."""
        with self._lock:
            self._profiles: dict[str, Profile] = {}
            self._by_external: dict[str, Profile] = {}
            self._by_alias: dict[tuple[str, str], Profile] = {}
            self._orphans: dict[str, dict[str, dict[str, Any]]] = {"emails": {}, "phones": {}}
            self._deleted: dict[str, list[Any]] = {
                "external_ids": [],
                "braze_ids": [],
                "user_aliases": [],
                "emails": [],
                "phones": [],
            }
            self._identified: list[dict[str, Any]] = []
            self._sequence = 0

    # -- reading -----------------------------------------------------------------------------------

    def profile(self, external_id: str) -> dict[str, Any] | None:
        """The profile with this external_id, or None."""
        return self.find(external_id=external_id)

    def find(self, **one: Any) -> dict[str, Any] | None:
        """The profile one identifier resolves to (for email/phone: the most recently updated), or None."""
        with self._lock:
            found = self._lookup(identifier(**one))
            return found.to_dict() if found else None

    def find_all(self, **one: Any) -> list[dict[str, Any]]:
        """Every profile one identifier matches (several can share an email or phone)."""
        with self._lock:
            return [p.to_dict() for p in self._lookup_all(identifier(**one))]

    def profiles(self) -> list[dict[str, Any]]:
        """All profiles, oldest first."""
        with self._lock:
            return [p.to_dict() for p in self._profiles.values()]

    def count(self) -> int:
        """How many profiles exist."""
        with self._lock:
            return len(self._profiles)

    def snapshot(self) -> dict[str, Any]:
        """Everything as JSON: profiles, orphans {emails, phones}, deleted identifiers, identified aliases."""
        with self._lock:
            return {
                "profiles": [p.to_dict() for p in self._profiles.values()],
                "orphans": copy.deepcopy(self._orphans),
                "deleted": copy.deepcopy(self._deleted),
                "identified_aliases": copy.deepcopy(self._identified),
            }

    # -- writing -----------------------------------------------------------------------------------

    def seed_profile(self, *, attributes: dict[str, Any] | None = None, **one: Any) -> str:
        """Create (or reuse) the profile for one identifier, set plain attributes, return its braze_id."""
        with self._lock:
            ident = identifier(**one)
            found = self._lookup(ident) or self._create(ident)
            for key, value in (attributes or {}).items():
                self._set_attribute(found, key, value, merge_objects=False)
            return found.braze_id

    def apply_track(self, items: list[TrackItem]) -> None:
        """Apply validated /users/track objects in order: set attributes, append events and purchases."""
        with self._lock:
            for array, ident, obj in items:
                target = self._track_target(ident, obj)
                if target is None:
                    continue
                if array == "attributes":
                    merge = obj.get("_merge_objects") is True
                    for key, value in obj.items():
                        if key not in CONTROL_KEYS:
                            self._set_attribute(target, key, value, merge_objects=merge)
                else:
                    # Braze keeps duplicate events and purchases as separate entries.
                    getattr(target, array).append(obj)

    def add_alias(self, alias: tuple[str, str], external_id: str | None) -> None:
        """/users/alias/new: add to the external_id's profile if it exists, else make an alias-only one."""
        with self._lock:
            if alias in self._by_alias:
                return
            if external_id is None:
                self._create(("user_alias", alias))
            elif (owner := self._by_external.get(external_id)) is not None:
                self._attach_alias(owner, alias)

    def identify(self, external_id: str, source: Identifier, prioritization: list[str] | None = None) -> None:
        """/users/identify: give the alias-, email- or phone-only profile `source` this external_id.

        https://www.braze.com/docs/api/endpoints/user_data/post_user_identify/: the alias-only
        profile is combined into the external_id's (not if that one has an alias of the same label)
        and removed; with no user of that external_id, the alias-only profile takes it. With no
        alias-only profile, the alias goes to the identified user; no profile is made for an
        external_id that does not exist (a non-fatal error: .../objects_filters/aliases_to_identify/).
        """
        with self._lock:
            kind, value = source
            self._identified.append({"external_id": external_id, kind: shown(source)})
            anonymous = self._lookup(source, prioritization)
            known = self._by_external.get(external_id)
            if anonymous is None:
                if known is not None and kind == "user_alias" and not self._label_taken(known, [value]):
                    self._attach_alias(known, value)
                return
            if anonymous is known or anonymous.external_id is not None:
                return  # already identified: Braze does not re-identify a known user
            if known is None:
                anonymous.external_id = external_id
                self._by_external[external_id] = anonymous
                self._touch(anonymous)
            elif not self._label_taken(known, anonymous.aliases):
                # Braze: if the target already has an alias with the same label, profiles are not combined.
                self._merge(anonymous, known)

    def merge(self, to_merge: Target, to_keep: Target) -> None:
        """/users/merge: fold the profile `to_merge` names into the one `to_keep` names, when both exist."""
        with self._lock:
            source, target = self._lookup(*to_merge), self._lookup(*to_keep)
            if source is not None and target is not None and source is not target:
                self._merge(source, target)

    def rename_external_id(self, current: str, new: str) -> str | None:
        """/users/external_ids/rename: `new` becomes the user's primary id and `current` a deprecated one,
        which still names the user; why not, by Braze's rules, or None."""
        with self._lock:
            found = self._by_external.get(current)
            if found is None or found.external_id != current:
                return "'current_external_id' must be the primary external_id of a user"
            if new in self._by_external:
                return "'new_external_id' is already in use as a primary or deprecated external_id"
            found.external_id = new
            found.deprecated_ids.append(current)
            self._by_external[new] = found
            self._touch(found)
            return None

    def remove_external_id(self, external_id: str) -> str | None:
        """/users/external_ids/remove: forget a deprecated external_id; why not, or None."""
        with self._lock:
            found = self._by_external.get(external_id)
            if found is None or external_id not in found.deprecated_ids:
                return "only a deprecated external_id can be removed"
            found.deprecated_ids.remove(external_id)
            del self._by_external[external_id]
            return None

    def update_alias(self, label: str, old_name: str, new_name: str) -> None:
        """/users/alias/update: the alias (old_name, label) is named new_name from now on, if it exists."""
        with self._lock:
            found = self._by_alias.get((old_name, label))
            if found is None or (new_name, label) in self._by_alias:
                return
            found.aliases[found.aliases.index((old_name, label))] = (new_name, label)
            del self._by_alias[(old_name, label)]
            self._by_alias[(new_name, label)] = found
            self._touch(found)

    def delete(self, ident: Identifier, prioritization: list[str] | None = None) -> None:
        """/users/delete: remember the identifier and remove the profile(s) it names, for good: a later
        /users/track by the same external_id creates a new profile
        (https://www.braze.com/docs/api/endpoints/user_data/post_user_delete/)."""
        with self._lock:
            kind = ident[0]
            self._deleted["user_aliases" if kind == "user_alias" else f"{kind}s"].append(shown(ident))
            if prioritization:
                victim = self._lookup(ident, prioritization)
                victims = [victim] if victim else []
            else:
                victims = self._lookup_all(ident)
            for profile in victims:
                self._remove(profile)

    def set_subscription_group(
        self, group_id: str, state: str, *, external_ids: list[str], emails: list[str], phones: list[str]
    ) -> None:
        """Set a subscription group state; emails/phones with no profile keep it as an orphan.

        An external_id no profile has keeps nothing: Braze's subscription pages keep states for
        unknown emails and phones and send creating a user to /users/track (https://www.braze.com/
        docs/api/endpoints/subscription_groups/post_update_user_subscription_group_v2/).
        """
        with self._lock:
            for external_id in external_ids:
                if (found := self._by_external.get(external_id)) is not None:
                    found.subscription_groups[group_id] = state
                    self._touch(found)
            for kind, values in (("email", emails), ("phone", phones)):
                for value in values:
                    matches = self._lookup_all((kind, value))
                    for found in matches:
                        found.subscription_groups[group_id] = state
                        self._touch(found)
                    if not matches:
                        self._orphan(kind, value).setdefault("subscription_groups", {})[group_id] = state

    def set_email_subscribe(self, emails: list[str], state: str) -> None:
        """/email/status: set email_subscribe on every profile with the email, or keep it orphaned."""
        with self._lock:
            for email in emails:
                matches = self._lookup_all(("email", email))
                for found in matches:
                    found.email_subscribe = state
                    self._touch(found)
                if not matches:
                    self._orphan("email", email)["email_subscribe"] = state

    # -- internals (caller holds the lock) ------------------------------------------------------

    def _lookup_all(self, ident: Identifier) -> list[Profile]:
        kind, value = ident
        if kind == "external_id":
            found = self._by_external.get(value)
        elif kind == "braze_id":
            found = self._profiles.get(value)
        elif kind == "user_alias":
            found = self._by_alias.get(value)
        else:
            # Contact identifiers are rare in this project's traffic: a scan beats an index that must
            # follow every change of the email and phone attributes.
            key = contact_key(kind, value)
            return [
                p
                for p in self._profiles.values()
                if isinstance(p.attributes.get(kind), str) and contact_key(kind, p.attributes[kind]) == key
            ]
        return [found] if found else []

    def _lookup(self, ident: Identifier, prioritization: list[str] | None = None) -> Profile | None:
        matches = self._lookup_all(ident)
        rules = prioritization or []
        if "identified" in rules:
            matches = [p for p in matches if p.external_id is not None]
        elif "unidentified" in rules:
            matches = [p for p in matches if p.external_id is None]
        if not matches:
            return None
        pick = min if "least_recently_updated" in rules else max
        return pick(matches, key=lambda p: p.touched)

    def _track_target(self, ident: Identifier, obj: dict[str, Any]) -> Profile | None:
        found = self._lookup(ident)
        if found is None:
            # _update_existing_only defaults to true only for user_alias, so an event or purchase by an
            # alias Braze does not have is dropped, and the request still answers 201
            # (https://www.braze.com/docs/api/objects_filters/event_object/, .../purchase_object/);
            # braze_ids are Braze's to assign.
            existing_only = obj.get("_update_existing_only", ident[0] == "user_alias")
            if existing_only or ident[0] == "braze_id":
                return None
            found = self._create(ident)
        self._touch(found)
        return found

    def _create(self, ident: Identifier) -> Profile:
        self._sequence += 1
        profile = Profile(braze_id=f"{self._sequence:024x}")
        self._profiles[profile.braze_id] = profile
        kind, value = ident
        if kind == "external_id":
            profile.external_id = value
            self._by_external[value] = profile
        elif kind == "user_alias":
            self._attach_alias(profile, value)
        elif kind in ("email", "phone"):
            self._set_attribute(profile, kind, value, merge_objects=False)
        self._touch(profile)
        return profile

    def _touch(self, profile: Profile) -> None:
        self._sequence += 1
        profile.touched = self._sequence

    def _attach_alias(self, profile: Profile, alias: tuple[str, str]) -> None:
        profile.aliases.append(alias)
        self._by_alias[alias] = profile

    @staticmethod
    def _label_taken(profile: Profile, aliases: list[tuple[str, str]]) -> bool:
        labels = {label for _, label in profile.aliases}
        return any(label in labels for _, label in aliases)

    def _set_attribute(self, profile: Profile, key: str, value: Any, *, merge_objects: bool) -> None:
        if key in SUBSCRIBE_FIELDS:
            setattr(profile, key, value)
        elif key == "subscription_groups":
            for group in value:
                profile.subscription_groups[group["subscription_group_id"]] = group["subscription_state"]
        else:
            apply_attribute(profile.attributes, key, value, merge_objects=merge_objects)
            if key in ("email", "phone") and isinstance(value, str):
                self._adopt_orphan(profile, key, value)

    def _orphan(self, kind: str, value: str) -> dict[str, Any]:
        return self._orphans[f"{kind}s"].setdefault(contact_key(kind, value), {})

    def _adopt_orphan(self, profile: Profile, kind: str, value: str) -> None:
        # Braze keeps states set for an unknown address and applies them once a profile has it.
        orphan = self._orphans[f"{kind}s"].pop(contact_key(kind, value), None)
        if orphan is None:
            return
        if "email_subscribe" in orphan:
            profile.email_subscribe = orphan["email_subscribe"]
        profile.subscription_groups.update(orphan.get("subscription_groups", {}))

    def _merge(self, source: Profile, target: Profile) -> None:
        target.fold_in(source)
        self._remove(source)
        for alias in source.aliases:
            self._attach_alias(target, alias)
        self._touch(target)

    def _remove(self, profile: Profile) -> None:
        del self._profiles[profile.braze_id]
        for external_id in (profile.external_id, *profile.deprecated_ids):
            if external_id is not None:
                self._by_external.pop(external_id, None)
        for alias in profile.aliases:
            self._by_alias.pop(alias, None)
