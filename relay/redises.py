"""Which Redis holds each workspace: REDIS_URL's, or its own (its routes' `redis_url_env`).

A workspace is the unit placed on a Redis: its lanes, drain jobs (RQ's queues), rate-limit state,
dead letters, metrics and everything the edge keeps for its routes live on that one Redis. A Redis
is named by the variable that gives its URL (`REDIS_URL`, `BRAND_B_REDIS_URL`): the name is what
logs, /readyz, /metrics and RELAY_WORKER_REDIS say, never the URL (it may hold a password).
Workspaces whose variables hold the same URL share one Redis (and one client).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from relay import store
from relay.config import Settings
from relay.errors import ConfigError

DEFAULT = "REDIS_URL"  # the name of the Redis of every workspace that names none of its own
WORKER_REDIS = "RELAY_WORKER_REDIS"  # a worker told to serve one Redis only: its name


@dataclass(frozen=True)
class Server:
    """One Redis of the relay: its name, its URL (None: REDIS_URL's, or the embedded one), its workspaces."""

    name: str
    url: str | None = field(repr=False)  # may hold a password
    workspaces: tuple[str, ...] = ()


def servers(settings: Settings) -> list[Server]:
    """Every configured Redis, REDIS_URL's first (it is there even when no workspace is left on it)."""
    by_url: dict[str | None, Server] = {None: Server(DEFAULT, None)}
    for workspace in sorted(settings.workspaces.values(), key=lambda found: found.id):
        url = workspace.redis_url if workspace.redis_url != settings.redis_url else None
        known = by_url.get(url) or Server(workspace.redis_env or DEFAULT, url)
        by_url[url] = dataclasses.replace(known, workspaces=(*known.workspaces, workspace.id))
    return list(by_url.values())


def named(settings: Settings, name: str) -> Server:
    """The Redis of this name; ConfigError naming the ones there are."""
    found = {server.name: server for server in servers(settings)}
    if name not in found:
        raise ConfigError(
            f"{WORKER_REDIS}={name} names no Redis of the routes file: give one of {', '.join(found)}"
        )
    return found[name]


def only(settings: Settings, server: Server) -> Settings:
    """The settings as the processes of one Redis see them: the routes and workspaces it holds."""
    held = set(server.workspaces)
    return dataclasses.replace(
        settings,
        routes={name: route for name, route in settings.routes.items() if route.workspace in held},
        workspaces={name: found for name, found in settings.workspaces.items() if name in held},
    )


class Redises:
    """A client for each configured Redis, found by its name or by a workspace it holds."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.servers = servers(settings)
        self.clients = {
            server.name: store.connect(settings, url=server.url, **kwargs) for server in self.servers
        }
        self._of = {workspace: server for server in self.servers for workspace in server.workspaces}

    @property
    def default(self) -> redis.Redis:
        """REDIS_URL's client."""
        return self.clients[DEFAULT]

    def server_of(self, workspace: str) -> Server:
        """The Redis a workspace lives on (REDIS_URL's for one the routes file does not name)."""
        return self._of.get(workspace, self.servers[0])

    def of(self, workspace: str) -> redis.Redis:
        """The client of a workspace's Redis."""
        return self.clients[self.server_of(workspace).name]

    def __iter__(self) -> Iterator[tuple[Server, redis.Redis]]:
        """Each Redis with its client, REDIS_URL's first."""
        for server in self.servers:
            yield server, self.clients[server.name]

    def __len__(self) -> int:
        """How many Redis servers the relay uses."""
        return len(self.servers)

    def close(self) -> None:
        """Close every client's connections."""
        for client in self.clients.values():
            client.close()
