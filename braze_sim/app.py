"""The Flask app: every Braze path goes through one pipeline (size, auth, rate limit, faults, handler, log).

Order of checks, and what each one costs the caller: unknown path 404 and wrong method 405, body over
`max_body_bytes` 413, bad key 401 (none of these spend rate-limit quota); `rate_limit_next` 429, then
the family's window 429 (neither spends quota nor changes state); from here the request counts as
accepted: `fail_next` / `error_rate` answer `error_status` without changing state, else a non-JSON body
400, else the endpoint. Latency and slow faults sleep after the state change, before the answer.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from braze_sim.control import control_blueprint
from braze_sim.endpoints import Endpoint, Invalid, endpoint_for
from braze_sim.limits import Quota

if TYPE_CHECKING:
    from braze_sim.server import Simulator

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def create_sim_app(sim: Simulator) -> Flask:
    """Build the simulator's Flask app: Braze endpoints plus the /_sim/ control API."""
    app = Flask("braze_sim")
    app.register_blueprint(control_blueprint(sim))

    def braze(path: str = "") -> Response:
        return _answer(sim, "/" + path)

    # One catch-all view so unknown paths are logged and answered the way Braze answers them.
    app.add_url_rule("/", "braze_root", braze, methods=METHODS)
    app.add_url_rule("/<path:path>", "braze", braze, methods=METHODS)
    return app


def _answer(sim: Simulator, path: str) -> Response:
    arrived = time.time()
    endpoint = endpoint_for(path, request.method)
    family = endpoint.family if endpoint else "default"
    data = request.get_data(cache=False)  # read it all, so the connection stays usable after an early answer
    too_big = len(data) > sim.config.max_body_bytes
    body, parsed = (None, False) if too_big else _parse(data)
    entry: dict[str, Any] = {
        "time": arrived,
        "method": request.method,
        "path": path,
        "family": family,
        "counted": False,
        "fault": None,
        "counts": _counts(body),
        "body": body,
    }
    quota = sim.limiter.peek(family, arrived)
    status: int
    answer: dict[str, Any]
    if endpoint is None:
        status, answer = 404, {"message": "Not Found"}
    elif request.method not in endpoint.methods:
        status, answer = 405, {"message": "Method Not Allowed"}
    elif too_big:
        status, answer = 413, {"message": "Request Entity Too Large"}
    elif not _authorized(sim.config.api_key):
        status, answer = 401, {"message": "Invalid API Key"}
    elif sim.faults.take("rate_limit_next"):
        entry["fault"] = "rate_limit_next"
        quota = Quota(False, quota.limit, 0, math.ceil(arrived + sim.faults.rate_limit_reset_s))
        status, answer = 429, {"message": "Rate limit exceeded"}
    elif not (quota := sim.limiter.acquire(family, arrived)).allowed:
        status, answer = 429, {"message": "Rate limit exceeded"}
    else:
        entry["counted"] = True
        status, answer = _accepted(sim, entry, endpoint, body if parsed else None)
    entry.update(status=status, response=answer)
    slow = sim.faults.roll(sim.faults.slow_rate)
    if slow:
        entry["fault"] = entry["fault"] or "slow"
    sim.record(entry)
    if sim.faults.hold_answer is not None and entry["counted"] and isinstance(body, dict):
        sim.faults.hold_answer(path, body)
    # The latency is the answer time, counted from the request's arrival as a caller times Braze's:
    # the simulator's own work on the request (reading, parsing, recording) is part of it.
    delay_ms = sim.faults.latency_ms + (sim.faults.slow_ms if slow else 0)
    if delay_ms > 0:
        time.sleep(max(0.0, arrived + delay_ms / 1000 - time.time()))
    return Response(json.dumps(answer), status, headers=quota.headers(), mimetype="application/json")


def _accepted(
    sim: Simulator, entry: dict[str, Any], endpoint: Endpoint, body: dict[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    faults = sim.faults
    if faults.take("fail_next"):
        entry["fault"] = "fail_next"
    elif faults.roll(faults.error_rate):
        entry["fault"] = "error_rate"
    if entry["fault"]:
        return faults.error_status, {"message": _phrase(faults.error_status)}
    if body is None:
        return 400, {"message": "Bad Request", "errors": [{"type": "the body must be a JSON object"}]}
    refusal = faults.reject_request(request.path, body) if faults.reject_request else None
    if refusal:
        entry["fault"] = "reject_request"
        return 400, {"message": refusal}
    try:
        status, answer = endpoint.handle(sim, body)
    except Invalid as problem:
        return 400, {"message": str(problem)}
    return status, answer


def _counts(body: Any) -> dict[str, int]:
    # How many items each array of the body holds, for the log and the CLI's one-line summary.
    return (
        {key: len(value) for key, value in body.items() if isinstance(value, list)}
        if isinstance(body, dict)
        else {}
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _parse(data: bytes) -> tuple[Any, bool]:
    try:
        body = json.loads(data)
    except ValueError:
        return None, False
    return body, isinstance(body, dict)


def _authorized(api_key: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    # compare_digest keeps the comparison time independent of how much of the key matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), api_key.encode())
