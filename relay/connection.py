"""How a process reaches a Redis server: a URL (`redis://`, `rediss://` with TLS, an ACL user in it),
or the primary that Sentinel names (and follows after a failover): REDIS_SENTINELS, or, for a
workspace's own Redis, a `redis+sentinel://` URL.

The one place where redis-py clients for a server are made (relay/store.py `connect` calls it), so
the TLS files apply to every URL, and the Sentinel options to every client of the primary: web,
workers, the CLI and RQ share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel, SentinelManagedConnection

from relay.errors import ConfigError

DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")  # a primary found through Sentinel, as a URL
SENTINEL_URL_FORM = "redis+sentinel://[user:password@]host:port,host:port/service[/db]"


class SentinelConnection(SentinelManagedConnection):
    """redis-py's connection to the primary Sentinel names, closed when a read is interrupted.

    redis-py closes its plain connections when a read is cut short (an exception raised by a signal
    handler: RQ's warm shutdown interrupts a worker's blocking pop that way), but its Sentinel
    connection keeps them open by default: the pop's answer is still owed, and the next command on
    that connection (RQ's own bookkeeping at exit) waits behind it for minutes.
    """

    def read_response(self, *args: Any, disconnect_on_error: bool | None = True, **kwargs: Any) -> Any:
        """As redis-py's, closing the connection on any error while reading, as its plain one does."""
        return super().read_response(*args, disconnect_on_error=disconnect_on_error, **kwargs)


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    """The same over TLS."""


@dataclass(frozen=True)
class Tls:
    """The files of a TLS connection (REDIS_SSL_*): the CA that signed the server's certificate, and a
    client certificate with its key where the server asks for one. Used with `rediss://` only."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def options(self) -> dict[str, Any]:
        """redis-py's `ssl_*` keywords for the files that are set."""
        named = {"ssl_ca_certs": self.ca_certs, "ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile}
        return {name: value for name, value in named.items() if value}


@dataclass(frozen=True)
class SentinelTarget:
    """The Sentinels to ask (REDIS_SENTINELS) and the service they watch (REDIS_SENTINEL_SERVICE)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str

    def url(self, db: int = 0) -> str:
        """The target in the `redis+sentinel://host:port,host:port/service/db` form some tools read."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"


def parse_sentinels(text: str, service: str) -> SentinelTarget | None:
    """REDIS_SENTINELS ('host:port,host:port') and its service; None when unset; ConfigError when bad."""
    if not text.strip():
        if service:
            raise ConfigError("REDIS_SENTINEL_SERVICE is set without REDIS_SENTINELS: set both, or neither")
        return None
    if not service:
        raise ConfigError("REDIS_SENTINELS is set without REDIS_SENTINEL_SERVICE (the name Sentinel watches)")
    found = []
    for part in (piece.strip() for piece in text.split(",")):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", str(DEFAULT_SENTINEL_PORT))
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS: {part!r} is not host:port (e.g. 10.0.0.1:26379)")
        found.append((host, int(port)))
    return SentinelTarget(tuple(found), service)


def parse_sentinel_url(url: str) -> tuple[SentinelTarget, str]:
    """A `redis+sentinel://` URL (`rediss+sentinel://`: TLS to the primary and the Sentinels) as the
    Sentinels and their service, and a plain URL with what the primary needs beside its address
    (scheme, ACL user, password, database); ConfigError naming the form, never the password."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    service, _, db = parts.path.strip("/").partition("/")
    if parts.scheme not in SENTINEL_SCHEMES or not service or not (db or "0").isdigit() or parts.query:
        raise ConfigError(f"a Sentinel URL takes the form {SENTINEL_URL_FORM}")
    try:
        target = parse_sentinels(hosts, service)  # no hosts: refused, since a service is named
    except ConfigError:
        target = None
    if target is None:
        raise ConfigError(f"a Sentinel URL takes the form {SENTINEL_URL_FORM}")
    primary = parts.scheme.partition("+")[0]
    return target, f"{primary}://{userinfo + '@' if userinfo else ''}sentinel/{db or 0}"


def client_for(
    url: str | None, *, tls: Tls, sentinel: SentinelTarget | None = None, **kwargs: Any
) -> redis.Redis:
    """A client of the server at `url`, or of the primary `sentinel` names.

    With `rediss://` the TLS files are used (to the Sentinels too). With Sentinel, `url` (optional)
    gives what the primary needs beside its address: scheme, ACL user, password and database; its
    host and port are not read. Other keywords (timeouts) go to redis-py, and to the Sentinels'
    own connections where they are `socket_*` options. A `redis+sentinel://` URL names both.
    """
    if sentinel is None and url is not None and url.partition("://")[0] in SENTINEL_SCHEMES:
        sentinel, url = parse_sentinel_url(url)
    if sentinel is None:
        if url is None:
            raise ConfigError("no Redis to connect to: set REDIS_URL or REDIS_SENTINELS")
        options = {**tls.options(), **kwargs} if url.startswith("rediss://") else kwargs
        return redis.Redis.from_url(url, **options)
    options = _url_options(url) if url else {}
    ssl = options.pop("ssl", False)
    secure = {"ssl": True, **tls.options()} if ssl else {}
    own = {name: value for name, value in kwargs.items() if name.startswith("socket_")}
    manager = Sentinel(list(sentinel.sentinels), sentinel_kwargs={**own, **secure}, **{**options, **kwargs})
    kind = SentinelSSLConnection if ssl else SentinelConnection
    client: redis.Redis = manager.master_for(sentinel.service, connection_class=kind, **secure)
    return client


def _url_options(url: str) -> dict[str, Any]:
    """What a URL says beside its address: user, password, database, other query options; `ssl` for
    `rediss://`."""
    options = parse_url(url)
    for name in ("host", "port", "path"):
        options.pop(name, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return {name: value for name, value in options.items() if value is not None}
