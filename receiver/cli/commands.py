"""Command-line tools for operators: `scripts/relay check|dead ...` (or `flask --app receiver ...`)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import click
from flask import Flask
from flask.cli import with_appcontext

from receiver import state
from receiver.admin import operations
from receiver.cli import transform_try
from receiver.cli.errors import Command, Group, Refusal
from receiver.state import redises, settings, workspace_client
from relay import store
from relay.config import warn_at_start
from relay.errors import ConfigError
from relay.lanes import Lane
from relay.modes import TEST_USER, DeadReason, Kind

dead = Group("dead", help="List, show, replay and purge dead letters (records that did not reach Braze).")
REASON = click.Choice([reason.value for reason in DeadReason])


def _select(ids: tuple[str, ...], route: str | None, reason: str | None, all_: bool) -> list[dict[str, Any]]:
    """The dead letters a command names: ids, or all matching --route/--reason, or --all."""
    if ids:
        found = operations.by_ids(redises(), ids)
        if found.missing:
            raise click.ClickException(f"no dead letter with id {', '.join(found.missing)}")
        return found.items
    if not (route or reason or all_):
        raise click.UsageError("name dead-letter ids, or select with --route/--reason, or pass --all")
    return list(operations.matching(redises(), route=route, reason=reason, as_of=time.time()))


@dead.command("list")
@click.option("--route", help="Only this route's dead letters.")
@click.option("--reason", type=REASON, help="Only dead letters with this reason.")
@click.option("--limit", default=50, show_default=True, help="Show at most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the record.")
def list_command(route: str | None, reason: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    items = list(itertools.islice(operations.matching(redises(), route=route, reason=reason), limit))
    for item in items:
        if as_json:
            click.echo(json.dumps(item))
        else:
            status = item["status"] if item["status"] is not None else "-"
            when = operations.ago(item["last_failed_at"])
            click.echo(
                f"{item['id']}  {item['route']}  {item['reason']}  status={status}  "
                f"attempts={item['attempts']}  {when}  {item['message'][:80]}"
            )
    total = operations.dead_counts(redises()).total
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
@click.option("--reason", type=REASON, help="Replay dead letters with this reason.")
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
def replay_command(ids: tuple[str, ...], route: str | None, reason: str | None, all_: bool) -> None:
    """Send dead letters again through the normal delivery path (invalid ones are validated again)."""
    done = operations.replay(redises(), _select(ids, route, reason, all_))
    for dead_id, messages in done.still_invalid:
        click.echo(f"{dead_id}: still invalid, left in place: {json.dumps(messages)}", err=True)
    click.echo(f"replayed {done.replayed} record(s); {len(done.still_invalid)} still invalid")


@dead.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--route", help="Purge this route's dead letters.")
@click.option("--reason", type=REASON, help="Purge dead letters with this reason.")
@click.option("--all", "all_", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_command(ids: tuple[str, ...], route: str | None, reason: str | None, all_: bool, yes: bool) -> None:
    """Delete dead letters for good."""
    items = _select(ids, route, reason, all_)
    if items and not yes:
        click.confirm(f"Delete {len(items)} dead letter(s) for good?", abort=True)
    purged = operations.purge(redises(), [item["id"] for item in items])
    click.echo(f"purged {purged} dead letter(s)")


def user_identifiers(*, alias: str | None, **named: str | None) -> dict[str, Any]:
    """The identifiers given on the command line as Braze names them; --alias is NAME:LABEL."""
    given: dict[str, Any] = {name: value for name, value in named.items() if value}
    if alias:
        alias_name, sep, alias_label = alias.rpartition(":")
        if not (sep and alias_name and alias_label):
            raise click.BadParameter(f"{alias!r} is not NAME:LABEL", param_hint="--alias")
        given["user_alias"] = {"alias_name": alias_name, "alias_label": alias_label}
    return given


consent = Group(
    "consent", help="The audit trail: each consent change and delete received, and what Braze confirmed."
)


@consent.command("history")
@click.option("--external-id", help="The user's external_id.")
@click.option("--email", help="The user's email (looked up by hash; it is not logged).")
@click.option("--phone", help="The user's phone (looked up by hash; it is not logged).")
@click.option(
    "--alias", metavar="NAME:LABEL", help="The user's alias, e.g. a browser's <td_client_id>:td_client_id."
)
@click.option("--workspace", default="default", show_default=True, help="The Braze workspace of the route.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history_command(
    *,
    external_id: str | None,
    email: str | None,
    phone: str | None,
    alias: str | None,
    workspace: str,
    as_json: bool,
) -> None:
    """Show one user's consent changes and deletes, newest first: received, confirmed, superseded
    (also: records not sent because the user's delete came after them), dead-lettered."""
    given = user_identifiers(external_id=external_id, email=email, phone=phone, alias=alias)
    if len(given) != 1:
        raise click.UsageError("give exactly one of --external-id, --email, --phone, --alias")
    events = operations.user_history(redises(), workspace, given)
    for event in events:
        if as_json:
            click.echo(json.dumps(event))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        changes = " ".join(f"{key}={value}" for key, value in event["changes"].items())
        extra = f"  reason={event['reason']}" if event.get("reason") else ""
        kind = event.get("kind") or "consent"
        click.echo(
            f"{when}Z  {kind:<10} {event['event']:<13} {changes}  record_time={event['time']}  "
            f"{event['record']}{extra}"
        )
    click.echo(f"{len(events)} event(s)", err=True)


unchanged = Group(
    "unchanged", help="skip_unchanged: what each route left out, and forgetting what was delivered."
)


@unchanged.command("show")
def unchanged_show_command() -> None:
    """Each skip_unchanged route: records delivered, objects not sent, values left out, last forget."""
    rows = operations.unchanged_summary(redises(), settings())
    for row in rows:
        when = operations.utc(row.forgotten_at) if row.forgotten_at else "never"
        click.echo(
            f"{row.route}  delivered={row.delivered}  not_sent={row.unchanged}  "
            f"values_left_out={row.values_left_out}  forgotten={when}"
        )
    click.echo(f"{len(rows)} route(s) with skip_unchanged", err=True)


@unchanged.command("forget")
@click.option(
    "--route", help="Forget what this route's values are checked against: it sends each value again once."
)
@click.option("--external-id", help="Forget one user's memory, by external_id.")
@click.option("--email", help="... by email (looked up by hash; it is not logged).")
@click.option("--phone", help="... by phone (looked up by hash; it is not logged).")
@click.option("--braze-id", help="... by braze_id.")
@click.option("--alias", metavar="NAME:LABEL", help="... by user alias, e.g. <td_client_id>:td_client_id.")
@click.option("--workspace", default="default", show_default=True, help="The Braze workspace of the user.")
def unchanged_forget_command(  # noqa: PLR0917 - one parameter per click option
    route: str | None,
    external_id: str | None,
    email: str | None,
    phone: str | None,
    braze_id: str | None,
    alias: str | None,
    workspace: str,
) -> None:
    """Forget a route's or a user's skip_unchanged memory, so the next values are sent whatever Braze has."""
    given = user_identifiers(
        external_id=external_id, email=email, phone=phone, braze_id=braze_id, alias=alias
    )
    if bool(route) == bool(given) or len(given) > 1:
        raise click.UsageError("give --route, or exactly one user identifier")
    if route:
        try:
            when = operations.forget_route(redises(), settings(), route)
        except LookupError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--route") from None
        click.echo(
            f"route {route}: values delivered before {operations.utc(when)} no longer count; "
            "each is sent again once"
        )
        return
    found = operations.forget_user(redises(), workspace, given)
    click.echo("forgotten" if found else "nothing was remembered for that user")


@click.command("check", cls=Command)
@with_appcontext
def check_command() -> None:
    """Check the configuration and Redis, and print the routes (no secret is printed)."""
    conf = settings()
    every = redises()
    notes: list[str] = []
    for server, client in every:
        try:
            found = store.check_server(client, allow_eviction=conf.allow_eviction)
        except ConfigError as exc:  # a Redis that may drop records (a Redis that does not answer: Command)
            raise Refusal(f"{server.name}: {exc}" if len(every) > 1 else str(exc)) from None
        notes += [f"{server.name}: {note}" if len(every) > 1 else note for note in found]
    warn_at_start(conf, "check")
    mode = "sandbox (bundled Braze simulator)" if conf.sandbox else "live Braze"
    answers = "Redis answers" if len(every) == 1 else f"{len(every)} Redis servers answer"
    click.echo(f"configuration OK: {len(conf.routes)} route(s) from {conf.config_path}; {mode}; {answers}")
    for note in notes:
        click.echo(f"  note: {note}")
    for route in conf.routes.values():
        table = f"{route.database}/{route.table}" if route.database else "-"
        workspace = conf.workspaces[route.workspace].endpoint
        lanes = ",".join(lane.name for lane in Lane.of_route(route, conf.delivery.track_shards))
        shaped = f"  transform={route.transform.label}" if route.transform else ""  # jq before the schema
        placed = f"  redis={every.server_of(route.workspace).name}" if len(every) > 1 else ""
        click.echo(
            f"  {route.name}: {route.mode}/{route.kind}  table={table}  lane={lanes}  braze={workspace}"
            + placed
            + shaped
        )


@click.command("send-test", cls=Command)
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
    loaded = state.current().loaders[route].record(record)
    if loaded.errors is not None:
        raise click.ClickException(f"the record is invalid for this route: {json.dumps(loaded.errors)}")
    batch = Batch(
        route=found, request_id=f"cli-{int(time.time() * 1000):x}", shards=conf.delivery.track_shards
    )
    batch.add(0, loaded.record, loaded.kind)
    store_batch(workspace_client(found.workspace), batch, conf)
    click.echo(
        f"queued {json.dumps(record)} on lane {next(iter(batch.payloads))} as request {batch.request_id}"
    )
    click.echo(
        f'follow it: worker log lines with request_ids ["{batch.request_id}"]; '
        "if Braze refuses it, `scripts/relay dead list` shows why"
    )


# Every operator command, as `scripts/relay` (receiver/cli/main.py) and `flask --app receiver` list them.
COMMANDS: tuple[click.Command, ...] = (
    dead,
    consent,
    unchanged,
    check_command,
    send_test_command,
    transform_try.transform_group,
)


def register(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    for command in COMMANDS:
        app.cli.add_command(command)
