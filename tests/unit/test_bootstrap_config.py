"""bootstrap.toml: defaults, overrides, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.config import (
    ADDRESS_MAX_BYTES,
    ADDRESS_PREFIX_V4,
    ADDRESS_PREFIX_V6,
    DEFAULT_LISTEN,
    IDENTITY_MAX_BYTES,
    ServerConfig,
    ServiceConfig,
    load_config,
    parse_config,
)
from bootstrap.logs import kv_value
from p2pchat.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert ServerConfig() == config
    assert DEFAULT_LISTEN == config.listen
    assert config.metrics is None and config.db is None
    assert IDENTITY_MAX_BYTES == config.service.identity_max_bytes
    assert (ADDRESS_MAX_BYTES, ADDRESS_PREFIX_V4, ADDRESS_PREFIX_V6, ()) == (
        config.service.address_max_bytes, config.service.address_prefix_v4,
        config.service.address_prefix_v6, config.service.address_exempt)


def test_every_section_is_read(tmp_path: Path) -> None:
    config = parse_config("""
[server]
listen = "0.0.0.0:9000"
metrics = "127.0.0.1:9100"
db = "data/s.db"
max_connections_per_ip = 4

[limits]
max_topics = 10
identity_max_bytes = 1000000
uploads_per_second_per_ip = 5.5
address_max_bytes = 500000000
address_prefix_v4 = 22
address_prefix_v6 = 48
address_exempt = ["198.51.100.0/24", "2001:db8:abcd::/48"]

[retention]
max_age_days = 7
topic_envelopes = 100
interval = 30

[link]
idle_timeout = 60.0
""", home=tmp_path)
    assert ("0.0.0.0", 9000) == config.listen
    assert ("127.0.0.1", 9100) == config.metrics
    assert tmp_path / "data/s.db" == config.db
    assert 4 == config.max_connections_per_ip
    assert (10, 1_000_000, 5.5) == (config.service.max_topics,
                                    config.service.identity_max_bytes,
                                    config.service.uploads_per_second_per_ip)
    assert (7, 100, 30) == (config.service.retention_max_age_days,
                            config.service.retention_topic_envelopes,
                            config.service.retention_interval)
    assert 60.0 == config.link.idle_timeout
    assert 60.0 == config.node.link.idle_timeout
    assert (500_000_000, 22, 48, ("198.51.100.0/24", "2001:db8:abcd::/48")) == (
        config.service.address_max_bytes, config.service.address_prefix_v4,
        config.service.address_prefix_v6, config.service.address_exempt)


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nmax_topic = 3\n", "unknown key(s) in [limits]: max_topic"),
    ("[limit]\n", "unknown section(s) limit"),
    ("[limits]\nmax_topics = 0\n", "max_topics must be an integer >= 1"),
    ("[limits]\nmax_topics = 2.5\n", "max_topics must be an integer >= 1"),
    ("[limits]\nrequests_per_second = -1\n", "requests_per_second must be a number > 0"),
    ("[limits]\nupload_burst_per_identity = 10\n",
     "upload_burst_per_identity must be an integer >= 1024"),
    ("[retention]\ntopic_bytes = 999999999999\n", "must not exceed limits topic_max_bytes"),
    ("[retention]\nmax_age_days = -1\n", "retention_max_age_days must be a number >= 0"),
    ("[server]\nlisten = 7446\n", "server.listen must be a string HOST:PORT"),
    ("[server]\nmetrics = \"nowhere\"\n", "server.metrics: invalid address"),
    ("[server]\nmax_connections = 0\n", "max_connections must be an integer >= 1"),
    ("[link]\nidle_timeout = 1\n", "link.idle_timeout"),
    ("[limits\n", "bootstrap.toml"),
    ("[limits]\naddress_max_bytes = 0\n", "address_max_bytes must be an integer >= 1"),
    ("[limits]\naddress_max_bytes = 1000\n", "address_max_bytes must be at least one envelope"),
    ("[limits]\naddress_max_bytes = \"1G\"\n", "address_max_bytes must be an integer"),
    ("[limits]\naddress_prefix_v4 = 33\n", "address_prefix_v4 must be an integer from 8 to 32"),
    ("[limits]\naddress_prefix_v4 = 4\n", "address_prefix_v4 must be an integer from 8 to 32"),
    ("[limits]\naddress_prefix_v4 = 24.0\n", "address_prefix_v4 must be an integer"),
    ("[limits]\naddress_prefix_v4 = true\n", "address_prefix_v4 must be an integer"),
    ("[limits]\naddress_prefix_v6 = 129\n",
     "address_prefix_v6 must be an integer from 16 to 128"),
    ("[limits]\naddress_prefix_v6 = -56\n", "address_prefix_v6 must be an integer from 16"),
    ("[limits]\naddress_exempt = \"10.0.0.0/8\"\n", "address_exempt must be a list"),
    ("[limits]\naddress_exempt = [\"10.0.0.1/8\"]\n", "address_exempt: 10.0.0.1/8 has host bits"),
    ("[limits]\naddress_exempt = [\"localhost\"]\n",
     "address_exempt: 'localhost' does not appear to be an IPv4 or IPv6 network"),
    ("[limits]\naddress_exempt = [10]\n", "address_exempt: 10 is not a string"),
    ("[limits]\naddress_exempt = [\"::ffff:10.0.0.0/104\"]\n", "write the IPv4-mapped network"),
])
def test_bad_values_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^bootstrap\.toml: ") as info:
        parse_config(text)
    assert message in str(info.value)


def test_service_config_validates_directly() -> None:
    with pytest.raises(ConfigError, match="stored_frame_bytes"):
        ServiceConfig(stored_frame_bytes=2 * 1024 * 1024)


@pytest.mark.parametrize(("value", "text"), [
    ("plain", "plain"), ("", '""'), ("two words", '"two words"'), ('a"b', '"a\\"b"'),
    ("k=v", '"k=v"'), ("line\nbreak", '"line\\nbreak"'), (3, "3"),
])
def test_log_values_cannot_forge_fields(value: object, text: str) -> None:
    assert text == kv_value(value)
