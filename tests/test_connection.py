"""relay/connection.py: how a process reaches its Redis (a URL with TLS files, or Sentinel), and the
settings that choose it (REDIS_SENTINELS, REDIS_SENTINEL_SERVICE, REDIS_SSL_*, RELAY_REDIS_MIN_REPLICAS)."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from relay.config import load_settings
from relay.connection import (
    SentinelConnection,
    SentinelSSLConnection,
    SentinelTarget,
    Tls,
    client_for,
    parse_sentinel_url,
    parse_sentinels,
)
from relay.errors import ConfigError

TLS = Tls(ca_certs="/etc/relay/ca.pem", certfile="/etc/relay/client.pem", keyfile="/etc/relay/client.key")
TARGET = SentinelTarget((("10.0.0.1", 26379), ("10.0.0.2", 26380)), "relay")


def test_sentinels_are_comma_separated_host_port_with_the_default_port() -> None:
    """'host:port,host' gives each Sentinel, 26379 where no port is given."""
    found = parse_sentinels("10.0.0.1:26380, sentinel-b", "relay")
    assert found == SentinelTarget((("10.0.0.1", 26380), ("sentinel-b", 26379)), "relay")


@pytest.mark.parametrize(
    ("sentinels", "service", "named"),
    [
        ("10.0.0.1:26379", "", "REDIS_SENTINEL_SERVICE"),
        ("", "relay", "REDIS_SENTINELS"),
        ("10.0.0.1:port", "relay", "'10.0.0.1:port'"),
        (":26379", "relay", "':26379'"),
    ],
)
def test_a_half_or_bad_sentinel_setting_stops_naming_it(sentinels: str, service: str, named: str) -> None:
    """One of the pair without the other, or a Sentinel that is not host:port: ConfigError naming it."""
    with pytest.raises(ConfigError, match=named):
        parse_sentinels(sentinels, service)


def test_settings_read_sentinels_tls_files_and_replicas(config_env: pytest.MonkeyPatch) -> None:
    """The environment's Redis settings reach Settings: Sentinel instead of REDIS_URL, the TLS files,
    the replicas to wait for."""
    config_env.setenv("REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2:26380")
    config_env.setenv("REDIS_SENTINEL_SERVICE", "relay")
    config_env.setenv("REDIS_SSL_CA_CERTS", TLS.ca_certs or "")
    config_env.setenv("RELAY_REDIS_MIN_REPLICAS", "1")
    settings = load_settings()
    assert settings.redis_sentinel == TARGET
    assert settings.redis_external and settings.redis_url is None
    assert settings.redis_tls == Tls(ca_certs=TLS.ca_certs)
    assert (settings.durability.min_replicas, settings.durability.wait_ms) == (1, 500)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"RELAY_REDIS_MIN_REPLICAS": "-1"}, "RELAY_REDIS_MIN_REPLICAS"),
        ({"RELAY_REDIS_MIN_REPLICAS": "1", "RELAY_REDIS_WAIT_MS": "0"}, "RELAY_REDIS_WAIT_MS"),
    ],
)
def test_replicas_below_zero_or_an_endless_wait_stop(
    config_env: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    """A negative replica count, or WAIT 0 (which never ends): ConfigError naming the variable."""
    for name, value in variables.items():
        config_env.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_a_rediss_url_takes_the_tls_files() -> None:
    """rediss:// with an ACL user: TLS with the CA and client certificate; redis:// ignores them."""
    secure = client_for("rediss://relay:secret@redis.example:6380/2", tls=TLS)
    kwargs = secure.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("relay", "secret", 2)
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        TLS.ca_certs, TLS.certfile, TLS.keyfile,
    )  # fmt: skip
    plain = client_for("redis://redis.example:6379/0", tls=TLS)
    assert "ssl_ca_certs" not in plain.connection_pool.connection_kwargs


def test_sentinel_client_takes_user_password_database_and_tls_from_the_url() -> None:
    """With Sentinel, REDIS_URL gives the primary's user, password, database and TLS (not its address);
    the Sentinels are reached with the same TLS files; the connections close when a read is cut short."""
    client = client_for("rediss://relay:secret@ignored:1/3", tls=TLS, sentinel=TARGET, socket_timeout=5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class is SentinelSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"], kwargs["ssl_ca_certs"]) == (
        "relay", "secret", 3, TLS.ca_certs,
    )  # fmt: skip
    sentinel_kwargs = pool.sentinel_manager.sentinel_kwargs
    assert sentinel_kwargs["ssl"] and sentinel_kwargs["ssl_ca_certs"] == TLS.ca_certs
    assert sentinel_kwargs["socket_timeout"] == 5
    plain = client_for(None, tls=TLS, sentinel=TARGET)
    assert plain.connection_pool.connection_class is SentinelConnection


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_primarys_user_and_database() -> None:
    """`redis+sentinel://user:password@host:port,host:port/service/db` (a workspace's own Redis):
    the Sentinels, the service and what the primary needs; `rediss+sentinel` is TLS to both."""
    target, primary = parse_sentinel_url("redis+sentinel://ops:pw@10.0.0.1:26379,10.0.0.2:26380/relay/3")
    assert (target, primary) == (TARGET, "redis://ops:pw@sentinel/3")
    assert parse_sentinel_url("redis+sentinel://10.0.0.1/relay")[1] == "redis://sentinel/0"
    client = client_for("rediss+sentinel://ops:pw@10.0.0.1:26379,10.0.0.2:26380/relay/3", tls=TLS)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "relay"
    assert pool.connection_class is SentinelSSLConnection
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["db"]) == ("ops", 3)
    assert [(kwargs.get("host"), kwargs.get("port")) for kwargs in (
        sentinel.connection_pool.connection_kwargs for sentinel in pool.sentinel_manager.sentinels
    )] == list(TARGET.sentinels)  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:secret@10.0.0.1:26379",  # no service
        "redis+sentinel://:secret@/relay",  # no Sentinel
        "redis+sentinel://:secret@10.0.0.1:26379/relay/x",  # no database number
        "redis+sentinel://:secret@10.0.0.1:26379/relay?ssl_cert_reqs=none",  # options it would ignore
    ],
)
def test_a_bad_sentinel_url_is_refused_without_its_password(url: str) -> None:
    """A Sentinel URL that cannot be followed stops with its form, never its password."""
    with pytest.raises(ConfigError) as refused:
        parse_sentinel_url(url)
    assert "redis+sentinel://[user:password@]host:port" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_rq_dashboard_follows_the_primary_through_the_sentinels(config_env: pytest.MonkeyPatch) -> None:
    """With Sentinel, rq-dashboard gets the Sentinels and the service (a redis+sentinel URL), not an
    address that a failover would leave behind; the password travels apart."""
    from receiver.admin.pages import dashboard_redis_url

    config_env.setenv("REDIS_URL", "redis://ops:s3cret-pw@ignored:1/2")
    config_env.setenv("REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2:26380")
    config_env.setenv("REDIS_SENTINEL_SERVICE", "relay")
    settings = load_settings()
    client = client_for(settings.redis_url, tls=settings.redis_tls, sentinel=settings.redis_sentinel)
    shown, password = dashboard_redis_url(settings, client)
    assert shown.startswith("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/relay/2?")
    assert password == "s3cret-pw"
