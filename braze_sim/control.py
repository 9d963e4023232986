"""The /_sim/ control API: inspect state, the request log and stats, set faults, reset. No auth.

GET  /_sim/                      this list, and the Braze endpoints the simulator answers
GET  /_sim/state                 profiles, orphans, deleted identifiers, identified aliases
GET  /_sim/users/<external_id>   one profile, or 404
GET  /_sim/aliases/<label>/<name> the profile of the alias {alias_name: name, alias_label: label}, or 404
GET  /_sim/catalogs/<name>/items  a catalog's items by id, or 404
GET  /_sim/requests?since=<i>    {"requests": [log entries from index i], "next": next index}
GET  /_sim/stats                 requests per path and status, 429s per family, track items
GET  /_sim/faults                current fault settings
POST /_sim/faults                set fault fields from a JSON object (400 naming a bad field)
POST /_sim/reset                 clear state, request log, rate-limit windows and faults
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from braze_sim.endpoints import CATALOG_METHODS, ENDPOINTS

if TYPE_CHECKING:
    from braze_sim.server import Simulator


def offered() -> dict[str, Any]:
    """What the simulator offers: this control API (from the list above) and the Braze endpoints."""
    lines = [line.split(None, 2) for line in (__doc__ or "").splitlines() if line.startswith(("GET", "POST"))]
    return {
        "simulator": "braze_sim: a Braze REST API on loopback, for tests and the sandbox",
        "control": [{"method": method, "path": path, "what": what.strip()} for method, path, what in lines],
        "braze_endpoints": [
            {"method": "POST", "path": path, "rate_limit_family": endpoint.family}
            for path, endpoint in sorted(ENDPOINTS.items())
        ]
        + [
            {"method": method, "path": "/catalogs/{catalog_name}/items", "rate_limit_family": "catalog"}
            for method in CATALOG_METHODS
        ],
        "api_key_header": "Authorization: Bearer <the simulator's --api-key>",
    }


def control_blueprint(sim: Simulator) -> Blueprint:
    """Build the blueprint serving /_sim/ for one simulator."""
    control = Blueprint("sim_control", __name__, url_prefix="/_sim")

    @control.get("/")
    def index() -> ResponseReturnValue:
        return jsonify(offered())

    @control.get("/state")
    def state() -> ResponseReturnValue:
        return jsonify(sim.state.snapshot())

    @control.get("/users/<path:external_id>")
    def user(external_id: str) -> ResponseReturnValue:
        found = sim.state.profile(external_id)
        return jsonify(found) if found else (jsonify({"message": "Not Found"}), 404)

    @control.get("/aliases/<alias_label>/<path:alias_name>")
    def alias(alias_label: str, alias_name: str) -> ResponseReturnValue:
        found = sim.state.find(user_alias={"alias_name": alias_name, "alias_label": alias_label})
        return jsonify(found) if found else (jsonify({"message": "Not Found"}), 404)

    @control.get("/catalogs/<name>/items")
    def catalog(name: str) -> ResponseReturnValue:
        found = sim.catalogs.items(name)
        return jsonify(found) if found is not None else (jsonify({"message": "Not Found"}), 404)

    @control.get("/requests")
    def requests() -> ResponseReturnValue:
        since = request.args.get("since", "0")
        if not since.isdigit():
            return jsonify({"message": "'since' must be a non-negative integer"}), 400
        entries = sim.requests_since(int(since))
        return jsonify({"requests": entries, "next": int(since) + len(entries)})

    @control.get("/stats")
    def stats() -> ResponseReturnValue:
        return jsonify(sim.stats())

    @control.route("/faults", methods=["GET", "POST"])
    def faults() -> ResponseReturnValue:
        if request.method == "POST":
            values: Any = request.get_json(silent=True)
            if not isinstance(values, dict):
                return jsonify({"message": "send a JSON object of fault fields"}), 400
            try:
                sim.faults.update(values)
            except ValueError as problem:
                return jsonify({"message": str(problem)}), 400
        return jsonify(sim.faults.as_dict())

    @control.post("/reset")
    def reset() -> ResponseReturnValue:
        sim.reset()
        return jsonify({"message": "reset"})

    return control
