"""Marshmallow schemas for one record of each mode, checked against Braze's own field rules.

A loaded record is a flat JSON-safe dict: the user identifier under `_id` (one key of Braze's
identifier object), `time` as UNIX seconds (None when absent: the edge fills in the receive time),
and the mode's own fields. Handlers translate it into a Braze object without looking anything up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from receiver.records.fields import (
    MAX_STRING,
    BrazeString,
    LooseFloat,
    LooseInteger,
    Prioritization,
    Time,
    UserAlias,
    strict_json,
)
from receiver.records.iso4217 import CURRENCIES
from relay.config import Limits
from relay.modes import Kind, KindRegistry
from relay.routes import Route

S = TypeVar("S", bound="RecordSchema")
IDENTIFIERS = ("external_id", "braze_id", "user_alias", "email", "phone")
RESERVED_PROPERTIES = frozenset({"time", "event_name"})
SUBSCRIPTION_STATES = ("subscribed", "unsubscribed")
# E.164 as Braze's subscription calls require it: "+" and the number, country code first, at most 15
# digits (https://www.braze.com/docs/api/endpoints/subscription_groups/
# post_update_user_subscription_group_status_v2/, `phones`); 8 at least, the shortest in use, and
# no leading 0 (no country code starts with one).
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
GLOBAL_STATES = ("opted_in", "subscribed", "unsubscribed")
IDENTIFIER_HELP = (
    "One identifier is required: external_id, braze_id, user_alias "
    "(or alias_name + alias_label), email or phone."
)


def depth(value: Any, limit: int) -> int:
    """How deep objects and arrays nest in `value`, counting stops once past `limit`."""
    if not isinstance(value, (dict, list)) or limit < 0:
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((depth(child, limit - 1) for child in children), default=0)


def check_free_fields(values: dict[str, Any], *, what: str, property_rules: bool) -> dict[str, list[str]]:
    """Braze's rules for free-form keys and values: 255-character keys and strings, reserved names."""
    errors: dict[str, list[str]] = {}
    for key, value in values.items():
        problems = []
        if len(key) > MAX_STRING:
            problems.append(f"{what} name longer than {MAX_STRING} characters.")
        if property_rules and key.startswith("$"):
            problems.append(f"{what} names must not start with '$'.")
        if property_rules and key in RESERVED_PROPERTIES:
            problems.append(f"'{key}' is reserved by Braze and cannot be a {what} name.")
        if isinstance(value, str) and len(value) > MAX_STRING:
            problems.append(f"String value longer than {MAX_STRING} characters.")
        if problems:
            errors[key[:64]] = problems
    return errors


SCHEMAS: KindRegistry[type[RecordSchema]] = KindRegistry("record schema")


def record_schema(kind: Kind) -> Callable[[type[S]], type[S]]:
    """Class decorator: the record schema of `kind` (one per kind; checked complete below)."""

    def register(cls: type[S]) -> type[S]:
        cls.kind = kind
        SCHEMAS.register(kind)(cls)
        return cls

    return register


class RecordSchema(Schema):
    """What every record has: the route's preprocessing, an identifier and a time."""

    kind: ClassVar[Kind]

    time = Time(load_default=None)
    # Identifier fields may be null (a TD column with no value): null means absent.
    external_id = BrazeString(allow_none=True)
    braze_id = BrazeString(allow_none=True)
    user_alias = UserAlias(allow_none=True)
    alias_name = BrazeString(allow_none=True)
    alias_label = BrazeString(allow_none=True)
    email = BrazeString(allow_none=True)
    phone = BrazeString(allow_none=True)

    # Which identifier fields may stand for the user in this mode (None: this mode has none).
    identifier_fields: tuple[str, ...] | None = IDENTIFIERS
    # Profile attributes take the strongest identifier and keep the others (email, phone) as attributes.
    several_identifiers_allowed = False

    def __init__(self, route: Route, limits: Limits | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.route = route
        self.limits = limits or Limits()

    @pre_load
    def _prepare(self, data: Any, **_: Any) -> Any:
        """Drop TD's own fields, take td_record_time as the time, parse pre-formatted JSON fields."""
        if not isinstance(data, dict):
            raise ValidationError("A record must be a JSON object.", "_record")
        out = {key: value for key, value in data.items() if not key.startswith("td_")}
        for key in set(out) & set(self.declared_fields):
            # A null in a declared field means absent (an export row with an empty column), except
            # identifiers, which `identifier` sorts out (null email/phone can be attributes).
            if out[key] is None and key not in IDENTIFIERS and key not in ("alias_name", "alias_label"):
                del out[key]
        if "time" not in out and "td_record_time" in data:
            out["time"] = data["td_record_time"]
        errors = {}
        for name in self.route.pre_formatted_fields:
            value = out.get(name)
            if isinstance(value, str):
                try:
                    out[name] = strict_json(value)
                except ValueError:
                    errors[name] = ["Not valid JSON (listed in pre_formatted_fields)."]
        if errors:
            raise ValidationError(errors)
        self._check_shape(out)
        return out

    def _check_shape(self, record: dict[str, Any]) -> None:
        """Refuse records too wide or too deep to be a user's data (hostile or broken input)."""
        if len(record) > self.limits.record_fields:
            raise ValidationError(
                f"Too many fields: {len(record)} (at most {self.limits.record_fields}).", "_record"
            )
        for key, value in record.items():
            if (
                isinstance(value, (dict, list))
                and depth(value, self.limits.record_depth) > self.limits.record_depth
            ):
                raise ValidationError(f"Nested deeper than {self.limits.record_depth} levels.", key[:64])

    def identifier(self, data: dict[str, Any]) -> dict[str, Any]:
        """Pop the user's identifier out of the loaded fields as Braze's identifier object."""
        keep_null = ("email", "phone") if self.several_identifiers_allowed else ()
        for name in (*IDENTIFIERS, "alias_name", "alias_label"):
            if name in data and data[name] is None and name not in keep_null:
                del data[name]
        if "alias_name" in data or "alias_label" in data:
            if "alias_name" not in data or "alias_label" not in data:
                missing = "alias_label" if "alias_name" in data else "alias_name"
                raise ValidationError({missing: ["alias_name and alias_label go together."]})
            if "user_alias" in data:
                raise ValidationError(
                    {"user_alias": ["Give user_alias or alias_name + alias_label, not both."]}
                )
            data["user_alias"] = {
                "alias_name": data.pop("alias_name"),
                "alias_label": data.pop("alias_label"),
            }
        allowed = self.identifier_fields or ()
        present = [name for name in allowed if data.get(name) is not None]
        if not present:
            if allowed == IDENTIFIERS:
                raise ValidationError({"identifier": [IDENTIFIER_HELP]})
            raise ValidationError({"identifier": [f"One identifier is required: {' or '.join(allowed)}."]})
        strong = [name for name in present if name not in ("email", "phone")]
        if len(strong) > 1 or (len(present) > 1 and not self.several_identifiers_allowed):
            raise ValidationError(
                {"identifier": [f"Exactly one identifier is allowed; got {', '.join(present)}."]}
            )
        name = present[0]
        return {name: data.pop(name)}

    def extras(self, data: dict[str, Any]) -> dict[str, Any]:
        """Fields this schema does not declare (INCLUDE schemas keep them for properties/attributes)."""
        return {key: data.pop(key) for key in list(data) if key not in self.declared_fields}


class _TrackSchema(RecordSchema):
    """What events and purchases share: app_id, properties, and extra fields taken as properties."""

    class Meta:
        unknown = INCLUDE  # extra columns are properties, as TD's Braze export does

    app_id = BrazeString()
    properties = fields.Dict(keys=fields.String(), load_default=dict)

    def shape(self, data: dict[str, Any]) -> dict[str, Any]:
        """Identifier out, extra fields merged into properties, Braze's property rules checked."""
        ident = self.identifier(data)
        properties = {**self.extras(data), **data.pop("properties")}
        errors = check_free_fields(properties, what="property", property_rules=True)
        if errors:
            raise ValidationError({"properties": errors})
        return {"_id": ident, **data, "properties": properties}


@record_schema(Kind.EVENTS)
class EventSchema(_TrackSchema):
    """user_track / custom_events: Braze's event object."""

    name = BrazeString(required=True)

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return self.shape(data)


@record_schema(Kind.PURCHASES)
class PurchaseSchema(_TrackSchema):
    """user_track / purchases: Braze's purchase object."""

    product_id = BrazeString(required=True)
    currency = fields.String(required=True)
    price = LooseFloat(required=True)
    quantity = LooseInteger(load_default=1, validate=validate.Range(1, 100, error="Must be from 1 to 100."))

    @validates_schema
    def _currency(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("currency") is not None and data["currency"].upper() not in CURRENCIES:
            raise ValidationError("Not an ISO 4217 currency code.", "currency")

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["currency"] = data["currency"].upper()
        return self.shape(data)


@record_schema(Kind.ATTRIBUTES)
class AttributesSchema(RecordSchema):
    """user_track / user_profile_attributes: every field but the identifier and time is an attribute."""

    class Meta:
        unknown = INCLUDE  # the attributes are the undeclared fields

    several_identifiers_allowed = True

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        ident = self.identifier(data)
        time = data.pop("time")
        attributes = {**self.extras(data), **data}  # email/phone left after the identifier are attributes
        if not self.route.null_unsets:
            attributes = {key: value for key, value in attributes.items() if value is not None}
        errors = check_free_fields(attributes, what="attribute", property_rules=False)
        if errors:
            raise ValidationError(errors)
        if not attributes:
            raise ValidationError({"_record": ["No attributes to set: the record holds only an identifier."]})
        return {"_id": ident, "time": time, "attributes": attributes}


@record_schema(Kind.ALIAS)
class AliasSchema(RecordSchema):
    """user_new_alias: a new alias, for an existing external_id or as a new alias-only user."""

    class Meta:
        unknown = EXCLUDE  # other columns mean nothing to /users/alias/new; ignore, as TD does

    identifier_fields = None
    alias_name = BrazeString(required=True)
    alias_label = BrazeString(required=True)

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        keep = ("time", "alias_name", "alias_label", "external_id")
        return {key: data[key] for key in keep if key in data}


@record_schema(Kind.IDENTIFY)
class IdentifySchema(RecordSchema):
    """user_identifying: attach an alias-, email- or phone-only user to an external_id."""

    class Meta:
        unknown = EXCLUDE  # other columns mean nothing to /users/identify

    external_id = BrazeString(required=True)
    # https://www.braze.com/docs/api/endpoints/user_data/post_user_identify/: an email or a phone
    # goes with a prioritization (which of the users sharing it); the route's when the record has none.
    prioritization = Prioritization()
    identifier_fields = ("user_alias", "email", "phone")

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        ident = self.identifier(data)
        shaped = {"time": data.get("time"), "external_id": data["external_id"], **ident}
        if "user_alias" in ident:
            if data.get("prioritization") is not None:
                raise ValidationError({"prioritization": ["Only with an email or a phone."]})
            return shaped
        return {**shaped, "prioritization": data.get("prioritization") or list(self.route.prioritization)}


@record_schema(Kind.DELETE)
class DeleteSchema(RecordSchema):
    """user_delete: the one identifier of the user to delete."""

    class Meta:
        unknown = EXCLUDE  # other columns mean nothing to /users/delete

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"_id": self.identifier(data), "time": data.get("time")}


@record_schema(Kind.CONSENT)
class ConsentSchema(RecordSchema):
    """user_subscription: a consent change, a subscription group state and/or the global email/push states."""

    class Meta:
        unknown = EXCLUDE  # other columns mean nothing to a consent change

    # An alias (a browser's consent, say) takes its states through /users/track attributes.
    identifier_fields = ("external_id", "email", "phone", "user_alias")
    subscription_group_id = BrazeString()
    subscription_state = fields.String(validate=validate.OneOf(SUBSCRIPTION_STATES))
    email_subscribe = fields.String(validate=validate.OneOf(GLOBAL_STATES))
    push_subscribe = fields.String(validate=validate.OneOf(GLOBAL_STATES))

    @validates_schema
    def _phone_is_e164(self, data: dict[str, Any], **_: Any) -> None:
        # Braze refuses a phone that is not E.164; rewriting one ("0xx", spaces) would guess a country.
        phone = data.get("phone")
        if phone is not None and not E164.match(phone):
            raise ValidationError(
                "Must be E.164: '+' and 8 to 15 digits, country code first (e.g. +14155550100), no "
                "leading 0; "
                "the relay does not rewrite phone numbers.",
                "phone",
            )

    @validates_schema
    def _something_to_set(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("subscription_group_id")) != bool(data.get("subscription_state")):
            missing = "subscription_state" if data.get("subscription_group_id") else "subscription_group_id"
            raise ValidationError("subscription_group_id and subscription_state go together.", missing)
        if not any(data.get(key) for key in ("subscription_group_id", "email_subscribe", "push_subscribe")):
            raise ValidationError(
                "Nothing to set: give subscription_group_id + subscription_state, "
                "email_subscribe or push_subscribe.",
                "_record",
            )

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        shaped = {"_id": self.identifier(data), **data}
        if self.route.double_opt_in and data.get("subscription_state") == "subscribed":
            # Braze applies use_double_opt_in_logic to a subscribe only.
            shaped["double_opt_in"] = True
        return shaped


def schema_for(route: Route, limits: Limits | None = None) -> RecordSchema:
    """The record schema of a route's mode, bound to its options (build once per route)."""
    return SCHEMAS[route.kind](route, limits)


class IngestSchema(Schema):
    """TD Data Ingestion API body: {"records": [ ... ]}."""

    class Meta:
        unknown = EXCLUDE  # TD may add envelope keys; records are what counts

    records = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1))


class IngestEventsSchema(Schema):
    """TD Data Ingestion API body as TD's browser SDK (td-js-sdk 4.x) sends it: {"events": [ ... ]}."""

    class Meta:
        unknown = EXCLUDE  # as IngestSchema: the records are what counts

    events = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1))


class ExportSchema(Schema):
    """TD query-result export to a web server: column names, column types and rows."""

    class Meta:
        unknown = EXCLUDE  # keys TD may add beside the three it documents are not ours to refuse

    column_names = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    column_types = fields.List(fields.String(), load_default=None)
    data = fields.Raw(required=True)  # checked by hand: loading 100,000 rows through a List field copies them

    @validates_schema
    def _shape(self, body: dict[str, Any], **_: Any) -> None:
        if not isinstance(body.get("data"), list):
            raise ValidationError("Must be a list of rows.", "data")
        names = body["column_names"]
        if len(set(names)) != len(names):
            raise ValidationError("Column names must be unique.", "column_names")
        types = body.get("column_types")
        if types is not None and len(types) != len(names):
            raise ValidationError("column_types must have one entry per column name.", "column_types")
