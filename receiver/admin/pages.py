"""The operator's pages at /admin/: overview, dead letters (list, show, replay, purge), a user's audit
trail, RQ dashboard.

Plain server-rendered HTML behind HTTP Basic with an admin key (access.py). Replay and
purge use the same store functions as `scripts/relay dead ...`; every POST carries the
session's CSRF token and answers with a redirect and a flash message.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from rq import Queue
from rq.serializers import JSONSerializer
from werkzeug.wrappers import Response

from receiver import state
from receiver.admin import access, charts, operations
from receiver.state import redises, settings
from relay import lanes, store
from relay.config import Settings
from relay.lanes import Lane
from relay.modes import DeadReason

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

PER_PAGE = 50


def plural(count: int, word: str) -> str:
    """'1 record', '2 records'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "csrf_token": access.csrf_token,
        "ago": operations.ago,
        "utc": operations.utc,
        "plural": plural,
    }


@bp.get("/", strict_slashes=False)
def overview() -> str:
    """Dead letters by reason and route, lane depths and retries, 429 pauses, RQ queues, skip_unchanged."""
    every = redises()
    dead = operations.dead_counts(every)
    lane_rows = [
        {"name": row.lane.name, "waiting": row.waiting, "retrying": row.retrying, "owned": row.owned}
        for client, names in operations.parts(every)
        for row in lanes.states(client, Lane.in_workspaces(client, names))
    ]
    paused = [
        {"workspace": pause.workspace, "family": pause.family, "until": pause.until}
        for pause in operations.pauses_now(every)
    ]
    queues = []
    for server, client in every:
        for name in store.RQ_QUEUES:
            queue = Queue(name, connection=client, serializer=JSONSerializer)
            queues.append(
                {
                    # With workspaces on Redis servers of their own, each Redis has its own queues.
                    "name": name if len(every) == 1 else f"{name} ({server.name})",
                    "queued": queue.count,
                    "started": queue.started_job_registry.count,
                    "failed": queue.failed_job_registry.count,
                }
            )
    minutes = operations.recent_minutes(every, 60)
    return render_template(
        "admin/overview.html",
        charts=[charts.delivered_chart(minutes), charts.lag_chart(minutes)],
        by_reason=Counter(dead.by_reason).most_common(),
        by_route=Counter(dead.by_route).most_common(),
        dead_total=dead.total,
        unchanged=operations.unchanged_summary(every, settings()),
        unchanged_ttl_days=settings().delivery.unchanged_ttl_s / 86400,
        lanes=lane_rows,
        pauses=paused,
        queues=queues,
    )


@bp.post("/unchanged/forget")
def unchanged_forget() -> Response:
    """Forget a skip_unchanged route's memory: its next values are each sent again once."""
    refused = access.check_csrf()
    if refused is not None:
        return refused
    route = request.form.get("route", "")
    try:
        when = operations.forget_route(redises(), settings(), route)
    except LookupError as exc:
        flash(str(exc.args[0]), "error")
    else:
        flash(f"route {route}: values delivered before {operations.utc(when)} no longer count", "ok")
    return redirect(url_for(".overview"), 303)


@bp.get("/dead")
def dead_list() -> str:
    """Dead letters, newest first, filtered by route and reason, 50 per page."""
    route = request.args.get("route") or None
    reason = request.args.get("reason") or None
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    as_of = time.time()
    client = redises()
    # Counts for the filter menus and one page of the filter, from the indexes: no other entry is read.
    counted = operations.dead_counts(client)
    found = operations.dead_page(
        client, route=route, reason=reason, as_of=as_of, offset=(page - 1) * PER_PAGE, count=PER_PAGE
    )
    shown, matched, total = found.items, found.total, counted.total
    routes, reasons = counted.by_route, counted.by_reason
    pages = max(math.ceil(matched / PER_PAGE), 1)
    return render_template(
        "admin/dead_list.html",
        items=shown,
        route=route,
        reason=reason,
        page=page,
        pages=pages,
        matched=matched,
        total=total,
        as_of=f"{as_of:.6f}",
        route_options=sorted(set(settings().routes) | set(routes)),
        reason_options=sorted(set(DeadReason) | set(reasons)),
        route_counts=routes,
        reason_counts=reasons,
        page_url=lambda number: url_for(".dead_list", route=route, reason=reason, page=number),
    )


@bp.get("/dead/<dead_id>")
def dead_detail(dead_id: str) -> str | tuple[str, int]:
    """One dead letter in full; its record as pretty JSON."""
    found = operations.by_ids(redises(), [dead_id])
    item = found.items[0] if found.items else None
    if item is None:
        message = f"No dead letter with id {dead_id}: it was replayed or purged, or never existed."
        return render_template("admin/error.html", title="Not found", message=message), 404
    return render_template(
        "admin/dead_detail.html",
        item=item,
        record_json=json.dumps(item["envelope"].get("rec"), indent=2, ensure_ascii=False, sort_keys=True),
        entry_json=json.dumps(item, indent=2, ensure_ascii=False),
    )


@bp.route("/history", methods=["GET", "POST"])
def history() -> str | Response:
    """One user's audit trail: consent changes and deletes (asked by POST: no identifier in a URL)."""
    workspaces = sorted(settings().workspaces)
    shown: dict[str, Any] = {"kind": "external_id", "value": "", "workspace": workspaces[0]}
    events: list[dict[str, Any]] | None = None
    if request.method == "POST":
        refused = access.check_csrf()
        if refused is not None:
            return refused
        shown = {name: request.form.get(name, "") for name in ("kind", "value", "workspace")}
        identifier = _identifier(shown["kind"], shown["value"].strip())
        if identifier is None or shown["workspace"] not in workspaces:
            flash(
                "give an identifier of one of the kinds listed (an alias as NAME:LABEL), and a workspace",
                "error",
            )
        else:
            events = operations.user_history(redises(), shown["workspace"], identifier)
    return render_template(
        "admin/history.html",
        kinds=operations.IDENTIFIER_KINDS,
        workspaces=workspaces,
        shown=shown,
        events=events,
    )


def _identifier(kind: str, value: str) -> dict[str, Any] | None:
    """The identifier a history form names, as Braze writes it; None if it names none."""
    if kind not in operations.IDENTIFIER_KINDS or not value:
        return None
    if kind != "user_alias":
        return {kind: value}
    name, sep, label = value.rpartition(":")
    return {"user_alias": {"alias_name": name, "alias_label": label}} if sep and name and label else None


def selected() -> Iterator[dict[str, Any]]:
    """The dead letters a form names: ids, or every one matching its route/reason filter as of its page."""
    ids = request.form.getlist("id")
    if ids:
        yield from operations.by_ids(redises(), ids).items
        return
    if request.form.get("scope") == "filter":
        yield from operations.matching(
            redises(),
            route=request.form.get("route") or None,
            reason=request.form.get("reason") or None,
            as_of=request.form.get("as_of", type=float),
        )


def back() -> Response:
    """Redirect to the list the form came from, with its filter (only our own path, never another site)."""
    route, reason = request.form.get("route") or None, request.form.get("reason") or None
    return redirect(url_for(".dead_list", route=route, reason=reason), 303)


@bp.post("/dead/replay")
def replay() -> Response:
    """Put dead letters back on their lanes (records refused at the edge are validated again first)."""
    refused = access.check_csrf()
    if refused is not None:
        return refused
    done = operations.replay(redises(), selected())
    message = f"replayed {plural(done.replayed, 'record')}"
    if done.still_invalid:
        message += f"; {len(done.still_invalid)} still invalid, left in place"
    flash(message, "error" if done.still_invalid else "ok")
    return back()


@bp.post("/dead/purge")
def purge() -> Response | str:
    """Delete dead letters for good, after a confirmation page that says how many."""
    refused = access.check_csrf()
    if refused is not None:
        return refused
    if request.form.get("confirm") != "yes":
        items = list(selected())
        return render_template("admin/confirm_purge.html", items=items[:PER_PAGE], count=len(items))
    purged = operations.purge(redises(), [item["id"] for item in selected()])
    flash(f"purged {plural(purged, 'dead letter')}", "ok")
    return back()


def dashboard_redis_url(settings: Settings, client: redis.Redis) -> tuple[str, str | None]:
    """The app's Redis as a URL for rq-dashboard, without its password (which rq-dashboard would show)."""
    kwargs = client.connection_pool.connection_kwargs
    password: str | None = kwargs.get("password")
    timeouts = [("socket_timeout", "5"), ("socket_connect_timeout", "2")]  # the edge's own timeouts
    if not settings.redis_url:  # the embedded Redis: a unix socket
        return f"unix://{kwargs['path']}?{urlencode([('db', str(kwargs.get('db', 0))), *timeouts])}", password
    parts = urlsplit(settings.redis_url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query = [(name, value) for name, value in parse_qsl(parts.query) if name != "password"]
    names = {name for name, _ in query}
    query += [(name, value) for name, value in timeouts if name not in names]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), "")), password


def mount_rq_dashboard(app: Flask, settings: Settings) -> None:
    """rq-dashboard at /admin/rq/, on the app's Redis, reading the relay's JSON-serialized jobs."""
    import rq_dashboard
    from rq_dashboard import web

    web.config.serializer = JSONSerializer  # rq-dashboard keeps this as a module setting; its CLI sets it so
    client = state.of(app).redis
    url, password = dashboard_redis_url(settings, client)
    # rq-dashboard connects per request from RQ_DASHBOARD_REDIS_URL (a list: one per instance) and
    # shows that URL in its menu, so the password travels apart from it.
    app.config["RQ_DASHBOARD_REDIS_URL"] = [url]
    app.config["RQ_DASHBOARD_REDIS_PASSWORD"] = password
    app.redis_conn = client  # type: ignore[attr-defined]  # for its routes without an instance
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/admin/rq")


def register(app: Flask) -> None:
    """Attach the admin pages, rq-dashboard and their guard (pages answer 404 without admin keys)."""
    settings = state.of(app).settings
    access.install(app, settings)
    app.register_blueprint(bp)
    mount_rq_dashboard(app, settings)
