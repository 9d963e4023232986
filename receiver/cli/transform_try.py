"""`scripts/relay transform try`: a route's transform (or a preset) on a JSON file, nothing stored.

It reads the file as the sender would post it, runs each input through the transform, loads every
record it makes with the schema of its kind, and prints the records with their validation errors and
the Braze request bodies the valid ones would become (translated and packed as a worker would, but
not sent, and with no newest-value check, which needs what was already sent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from handlers.packing import pack
from handlers.translate import to_items
from receiver import state, views
from receiver.cli.errors import Group, Refusal
from receiver.enqueue import Batch
from receiver.errors import ApiError
from receiver.records.fields import strict_json
from receiver.records.loader import Made, RecordLoader
from receiver.state import settings
from relay.modes import ROUTE_MODES, TRACK_TYPE_MODES, TRACK_TYPES
from relay.routes import Route
from relay.transforms import PRESETS, TransformError, compile_transform

transform_group = Group(
    "transform", help="Try a route's jq transform, or a preset, on a JSON file (nothing is stored)."
)


def inputs_of(body: Any, route: Route) -> tuple[str, list[Any], dict[int, dict[str, Any]]]:
    """The inputs of a body as its sender posts it, what it was read as, and its misfits (export rows
    that do not match column_names, which a lenient route rejects); a body the edge would refuse whole
    (such a row on a strict route, "records" beside "events") is a ClickException with the edge's own
    message."""
    try:
        if isinstance(body, list):
            return "an array of inputs (webhook)", body, {}
        if not isinstance(body, dict):
            return "one input (postback or webhook)", [body], {}
        if isinstance(body.get("column_names"), list) and isinstance(body.get("data"), list):
            limit = settings().limits.export_rows
            table = views.export_table(body, limit, lenient=route.skip_on_invalid_records)
            return "a TD export (each row zipped with column_names)", list(table.inputs()), table.misfits
        if isinstance(body.get("records"), list) or isinstance(body.get("events"), list):
            key = "events" if "events" in body else "records"
            return f'a TD ingestion body ("{key}")', views.ingest_records(body), {}
    except ApiError as exc:
        details = f" {json.dumps(exc.errors)}" if exc.errors else ""
        raise click.ClickException(f"the edge would answer {exc.code}: {exc.message}{details}") from None
    return "one input (postback or webhook)", [body], {}


def preset_loader(
    name: str, mode: str | None, track_type: str | None, args: dict[str, Any], table: str | None
) -> RecordLoader:
    """A route made for a preset alone, with the mode it is written for unless told otherwise."""
    preset = PRESETS[name]
    mode = mode or preset.modes[0]
    if mode not in preset.modes:
        raise click.UsageError(f"preset {name!r} needs mode {' or '.join(preset.modes)}")
    track_type = (track_type or preset.track_record_type) if mode in TRACK_TYPE_MODES else None
    variables = {"database": None, "table": table, "mode": mode, "track_record_type": track_type}
    try:
        compiled = compile_transform(source=None, preset=name, args=args, route={"name": "try", **variables})
    except TransformError as exc:
        raise click.ClickException(f"preset {name!r}: {exc}") from None
    route = Route("try", mode, table=table, track_record_type=track_type, transform=compiled)
    return RecordLoader(route, settings().limits)


def route_loader(name: str) -> RecordLoader:
    """A configured route, loaded as the edge loads it."""
    loader = state.current().loaders.get(name)
    if loader is None:
        raise click.BadParameter(
            f"no route {name!r}; routes: {', '.join(settings().routes)}", param_hint="ROUTE"
        )
    return loader


def parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """--arg NAME=VALUE pairs as $args: VALUE is JSON when it parses, else a string."""
    args: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--arg")
        try:
            args[name] = strict_json(value)
        except ValueError:
            args[name] = value
    return args


@transform_group.command("try")
@click.argument("names", nargs=-1, metavar="[ROUTE] FILE")
@click.option(
    "--preset", type=click.Choice(sorted(PRESETS)), help="Try a preset instead of a route's transform."
)
@click.option(
    "--mode", type=click.Choice(ROUTE_MODES), help="With --preset: the route's mode (default: the preset's)."
)
@click.option(
    "--track-record-type", type=click.Choice(TRACK_TYPES), help="With --preset: the default record type."
)
@click.option(
    "--arg", "args_", multiple=True, metavar="NAME=VALUE", help="With --preset: one of $args (VALUE as JSON)."
)
@click.option("--table", help="With --preset: the route's table ($route.table).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def try_command(
    *,
    names: tuple[str, ...],
    preset: str | None,
    mode: str | None,
    track_record_type: str | None,
    args_: tuple[str, ...],
    table: str | None,
    as_json: bool,
) -> None:
    """Run ROUTE's transform (or --preset NAME) on FILE ('-': stdin): records, errors, Braze bodies."""
    if len(names) != (1 if preset else 2):
        raise click.UsageError("give ROUTE FILE, or --preset NAME FILE")
    if not preset and (mode or track_record_type or args_ or table):
        raise click.UsageError("--mode, --track-record-type, --arg and --table go with --preset")
    path = names[-1]
    loader = (
        preset_loader(preset, mode, track_record_type, parse_args(args_), table)
        if preset
        else route_loader(names[0])
    )
    try:
        with click.open_file(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:  # not there, a directory, not readable: the command cannot run
        raise Refusal(f"{path}: {exc.strerror or exc}") from None
    try:
        body = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise click.ClickException(f"{path}: not valid JSON: {exc}") from None
    shape, inputs, misfits = inputs_of(body, loader.route)
    report = build_report(loader, shape, inputs, misfits)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    if report["failed"]:
        raise SystemExit(1)


def build_report(
    loader: RecordLoader, shape: str, inputs: list[Any], misfits: Mapping[int, dict[str, Any]]
) -> dict[str, Any]:
    """Every input's records with their errors (a misfit's, as the edge rejects it), and the Braze
    requests of the valid ones."""
    batch = Batch(route=loader.route, request_id="try", shards=1)
    entries, items, failed, number = [], [], 0, 0
    for index, document in enumerate(inputs):
        if index in misfits:  # an export row that does not fit the columns: rejected as it came
            made = Made([], json.dumps(misfits[index], ensure_ascii=False))
        else:
            made = loader.load(document, f"input {index}")
        entry: dict[str, Any] = {"index": index, "records": []}
        if made.error is not None:
            entry["error"] = made.error
            failed += 1
        for loaded in made.records:
            shown: dict[str, Any] = {
                "kind": loaded.kind,
                "record": loaded.raw,
                "valid": loaded.errors is None,
            }
            if loaded.errors is not None:
                shown["errors"] = loaded.errors
                failed += 1
            else:
                items.extend(to_items(batch.envelope(number, loaded.record, loaded.kind)))
            number += 1
            entry["records"].append(shown)
        entries.append(entry)
    requests = [
        {"endpoint": request.endpoint, "body": request.body()} for request in pack(items, settings().delivery)
    ]
    label = loader.route.transform.label if loader.route.transform else "no transform"
    return {
        "route": loader.route.name,
        "transform": label,
        "read_as": shape,
        "inputs": entries,
        "requests": requests,
        "failed": failed,
    }


def print_report(report: dict[str, Any]) -> None:
    """The report for a person."""
    inputs, shape = len(report["inputs"]), report["read_as"]
    click.echo(f"route {report['route']} ({report['transform']}); file read as {shape}: {inputs} input(s)")
    for entry in report["inputs"]:
        records = entry["records"]
        if "error" in entry:
            click.echo(f"input {entry['index']}: FAILED: {entry['error']}")
            continue
        if not records:
            click.echo(f"input {entry['index']}: filtered (the transform made no record)")
            continue
        click.echo(f"input {entry['index']}: {len(records)} record(s)")
        for position, shown in enumerate(records):
            verdict = (
                "valid" if shown["valid"] else "INVALID " + json.dumps(shown["errors"], ensure_ascii=False)
            )
            click.echo(f"  record {position} ({shown['kind']}): {verdict}")
            click.echo(f"    {json.dumps(shown['record'], ensure_ascii=False)}")
    click.echo(f"Braze requests they would become ({len(report['requests'])}):")
    for request in report["requests"]:
        click.echo(f"POST {request['endpoint']}")
        click.echo(json.dumps(request["body"], indent=2, ensure_ascii=False))
    if report["failed"]:
        click.echo(f"{report['failed']} input(s) or record(s) failed; nothing was stored", err=True)
