"""Command-line tools for operators: `flask --app receiver check|dead ...`."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from marshmallow import ValidationError

from receiver.schemas import RecordSchema
from receiver.state import redis_client, settings
from relay import audit, deadletters, store
from relay.lanes import Lane
from relay.modes import TEST_USER, Kind

dead = AppGroup("dead", help="List, show, replay and purge dead letters (records that did not reach Braze).")


def _ago(then: float) -> str:
    seconds = max(time.time() - then, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _select(ids: tuple[str, ...], route: str | None, reason: str | None, all_: bool) -> list[dict[str, Any]]:
    if ids:
        found = [deadletters.get(redis_client(), dead_id) for dead_id in ids]
        missing = [dead_id for dead_id, item in zip(ids, found, strict=True) if item is None]
        if missing:
            raise click.ClickException(f"no dead letter with id {', '.join(missing)}")
        return [item for item in found if item is not None]
    if not (route or reason or all_):
        raise click.UsageError("name dead-letter ids, or select with --route/--reason, or pass --all")
    return list(deadletters.iter_entries(redis_client(), route=route, reason=reason))


@dead.command("list")
@click.option("--route", help="Only this route's dead letters.")
@click.option(
    "--reason", help="Only reasons starting with this (invalid, braze_rejected, retries_exhausted, ...)."
)
@click.option("--limit", default=50, show_default=True, help="Show at most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the record.")
def list_command(route: str | None, reason: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    items = list(deadletters.iter_entries(redis_client(), route=route, reason=reason, limit=limit))
    for item in items:
        if as_json:
            click.echo(json.dumps(item))
        else:
            status = item["status"] if item["status"] is not None else "-"
            click.echo(
                f"{item['id']}  {item['route']}  {item['reason']}  status={status}  "
                f"attempts={item['attempts']}  {_ago(item['last_failed_at'])}  {item['message'][:80]}"
            )
    total = redis_client().zcard(store.DEAD_INDEX)
    click.echo(f"{len(items)} shown, {total} dead letter(s) in the store", err=True)


@dead.command("show")
@click.argument("dead_id")
def show_command(dead_id: str) -> None:
    """Show one dead letter in full: record, reason, Braze's answer, attempts and times."""
    (item,) = _select((dead_id,), None, None, False)
    click.echo(json.dumps(item, indent=2))


@dead.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--route", help="Replay this route's dead letters.")
@click.option("--reason", help="Replay dead letters whose reason starts with this.")
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
def replay_command(ids: tuple[str, ...], route: str | None, reason: str | None, all_: bool) -> None:
    """Send dead letters again through the normal delivery path (invalid ones are validated again)."""
    replayed, still_invalid = 0, 0
    for item in _select(ids, route, reason, all_):
        try:
            record = revalidate(item)
        except ValidationError as exc:
            still_invalid += 1
            click.echo(f"{item['id']}: still invalid, left in place: {json.dumps(exc.messages)}", err=True)
            continue
        if deadletters.requeue(redis_client(), item, settings().delivery, record) is not None:
            replayed += 1  # None: someone else replayed or purged it meanwhile
    click.echo(f"replayed {replayed} record(s); {still_invalid} still invalid")


def revalidate(item: dict[str, Any]) -> dict[str, Any] | None:
    """For a record refused at the edge, load it again with its route's current schema."""
    if item["reason"] != "invalid":
        return None
    route = settings().routes.get(item["route"])
    if route is None:
        raise ValidationError({"_route": [f"route {item['route']!r} is no longer configured"]})
    schema: RecordSchema = current_app.extensions["relay.schemas"][route.name]
    record: dict[str, Any] = schema.load(item["envelope"]["rec"]["raw"])
    if record.get("time") is None:
        record["time"] = item["envelope"]["at"]
    return record


@dead.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--route", help="Purge this route's dead letters.")
@click.option("--reason", help="Purge dead letters whose reason starts with this.")
@click.option("--all", "all_", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_command(ids: tuple[str, ...], route: str | None, reason: str | None, all_: bool, yes: bool) -> None:
    """Delete dead letters for good."""
    items = _select(ids, route, reason, all_)
    if items and not yes:
        click.confirm(f"Delete {len(items)} dead letter(s) for good?", abort=True)
    with redis_client().pipeline(transaction=True) as pipe:
        for item in items:
            deadletters.remove(pipe, item["id"])
        pipe.execute()
    click.echo(f"purged {len(items)} dead letter(s)")


consent = AppGroup("consent", help="The consent audit trail: what was received and what Braze confirmed.")


@consent.command("history")
@click.option("--external-id", help="The user's external_id.")
@click.option("--email", help="The user's email (looked up by hash; it is not logged).")
@click.option("--phone", help="The user's phone (looked up by hash; it is not logged).")
@click.option("--workspace", default="default", show_default=True, help="The Braze workspace of the route.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history_command(
    external_id: str | None, email: str | None, phone: str | None, workspace: str, as_json: bool
) -> None:
    """Show one user's consent changes, newest first: received, confirmed, superseded, dead-lettered."""
    given = {
        name: value
        for name, value in (("external_id", external_id), ("email", email), ("phone", phone))
        if value
    }
    if len(given) != 1:
        raise click.UsageError("give exactly one of --external-id, --email, --phone")
    events = audit.history(redis_client(), workspace, given)
    for event in events:
        if as_json:
            click.echo(json.dumps(event))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        changes = " ".join(f"{key}={value}" for key, value in event["changes"].items())
        extra = f"  reason={event['reason']}" if event.get("reason") else ""
        click.echo(
            f"{when}Z  {event['event']:<13} {changes}  record_time={event['time']}  {event['record']}{extra}"
        )
    click.echo(f"{len(events)} event(s)", err=True)


@click.command("check")
@with_appcontext
def check_command() -> None:
    """Check the configuration and Redis, and print the routes (no secret is printed)."""
    conf = settings()
    redis_client().ping()
    mode = "sandbox (bundled Braze simulator)" if conf.sandbox else "live Braze"
    click.echo(
        f"configuration OK: {len(conf.routes)} route(s) from {conf.config_path}; {mode}; Redis answers"
    )
    for route in conf.routes.values():
        table = f"{route.database}/{route.table}" if route.database else "-"
        workspace = conf.workspaces[route.workspace].endpoint
        lanes = ",".join(lane.name for lane in Lane.of_route(route, conf.delivery.track_shards))
        click.echo(
            f"  {route.name}: {route.mode}/{route.kind}  table={table}  lane={lanes}  braze={workspace}"
        )


@click.command("send-test")
@click.argument("route")
@click.option(
    "--field", "fields_", multiple=True, metavar="NAME=VALUE", help="Set or override a field of the record."
)
@click.option(
    "--yes", is_flag=True, help="Needed for a user_delete route: the test user is deleted in Braze."
)
@with_appcontext
def send_test_command(route: str, fields_: tuple[str, ...], yes: bool) -> None:
    """Send one sample record through ROUTE: validated and queued exactly as the HTTP edge does."""
    from receiver.enqueue import Batch, store_batch

    conf = settings()
    found = conf.routes.get(route)
    if found is None:
        raise click.BadParameter(f"no route {route!r}; routes: {', '.join(conf.routes)}", param_hint="ROUTE")
    if found.kind is Kind.DELETE and not yes:
        raise click.UsageError(f"route {route!r} deletes users in Braze: pass --yes to delete {TEST_USER!r}")
    record = dict(found.spec.sample)
    for item in fields_:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--field")
        record[name] = value
    schema: RecordSchema = current_app.extensions["relay.schemas"][route]
    try:
        loaded = schema.load(record)
    except ValidationError as exc:
        raise click.ClickException(
            f"the record is invalid for this route: {json.dumps(exc.messages)}"
        ) from None
    batch = Batch(
        route=found, request_id=f"cli-{int(time.time() * 1000):x}", shards=conf.delivery.track_shards
    )
    batch.add(0, loaded)
    store_batch(redis_client(), batch, conf)
    click.echo(
        f"queued {json.dumps(record)} on lane {next(iter(batch.payloads))} as request {batch.request_id}"
    )
    click.echo(
        f'follow it: worker log lines with request_ids ["{batch.request_id}"]; '
        "if Braze refuses it, `flask --app receiver dead list` shows why"
    )


def register(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    app.cli.add_command(dead)
    app.cli.add_command(consent)
    app.cli.add_command(check_command)
    app.cli.add_command(send_test_command)
