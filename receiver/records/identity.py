"""Record schemas of Braze's identity calls: merge two users, rename or remove an external id, update
an alias. Each checks Braze's rules for its call at the edge, so Braze never has to refuse a record."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, ValidationError, post_load, validates_schema

from receiver.records.fields import BrazeString, UserIdentifier
from receiver.records.schemas import RecordSchema, record_schema
from relay.modes import Kind

MERGE_SIDES = ("merge", "keep")


@record_schema(Kind.MERGE)
class MergeSchema(RecordSchema):
    """user_merge: fold the user `merge` names into the user `keep` names (/users/merge)."""

    class Meta:
        unknown = EXCLUDE  # other columns mean nothing to /users/merge

    identifier_fields = None
    # https://www.braze.com/docs/api/endpoints/user_data/post_users_merge/: each side names a user by
    # external_id, user_alias, or email or phone (with a prioritization).
    merge = UserIdentifier()
    keep = UserIdentifier()
    merge_external_id = BrazeString()
    keep_external_id = BrazeString()

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        sides = {side: self._side(data, side) for side in MERGE_SIDES}
        named = [
            {key: value for key, value in side.items() if key != "prioritization"} for side in sides.values()
        ]
        if named[0] == named[1]:
            raise ValidationError({"keep": ["merge and keep name the same user."]})
        return {"time": data.get("time"), **sides}

    def _side(self, data: dict[str, Any], side: str) -> dict[str, Any]:
        """One side's identifier object, with the route's prioritization for an email or phone."""
        obj, external_id = data.get(side), data.get(f"{side}_external_id")
        if (obj is None) == (external_id is None):
            raise ValidationError(
                {side: [f"Give {side} (an identifier object) or {side}_external_id: one of them."]}
            )
        ident: dict[str, Any] = obj if obj is not None else {"external_id": external_id}
        if ("email" in ident or "phone" in ident) and "prioritization" not in ident:
            ident = {**ident, "prioritization": list(self.route.prioritization)}
        return ident


class _CallSchema(RecordSchema):
    """A call of plain fields: they are the record (with its time); `different` must not be equal."""

    class Meta:
        unknown = EXCLUDE  # other columns mean nothing to the call

    identifier_fields = None
    kept: tuple[str, ...] = ()  # the fields the record keeps, besides its time
    different: tuple[str, str] | None = None  # two fields Braze refuses when equal

    @validates_schema
    def _different(self, data: dict[str, Any], **_: Any) -> None:
        if self.different is not None:
            first, second = self.different
            if data.get(first) == data.get(second) is not None:
                raise ValidationError(f"Must differ from {first}.", second)

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: data.get(key) for key in ("time", *self.kept)}


@record_schema(Kind.EXTERNAL_ID_RENAME)
class ExternalIdRenameSchema(_CallSchema):
    """external_id_rename: a user's new primary external_id; the current one is kept, deprecated."""

    current_external_id = BrazeString(required=True)
    new_external_id = BrazeString(required=True)
    kept = ("current_external_id", "new_external_id")
    # https://www.braze.com/docs/api/endpoints/user_data/external_id_migration/post_external_ids_rename/:
    # "The current_external_id and new_external_id cannot be the same."
    different = ("current_external_id", "new_external_id")


@record_schema(Kind.EXTERNAL_ID_REMOVE)
class ExternalIdRemoveSchema(_CallSchema):
    """external_id_remove: remove a deprecated external_id (one a rename left behind)."""

    external_id = BrazeString(required=True)
    kept = ("external_id",)


@record_schema(Kind.ALIAS_UPDATE)
class AliasUpdateSchema(_CallSchema):
    """alias_update: rename an alias (its name, under the same label)."""

    # https://www.braze.com/docs/api/endpoints/user_data/post_users_alias_update/: all three required.
    alias_label = BrazeString(required=True)
    old_alias_name = BrazeString(required=True)
    new_alias_name = BrazeString(required=True)
    kept = ("alias_label", "old_alias_name", "new_alias_name")
    different = ("old_alias_name", "new_alias_name")
