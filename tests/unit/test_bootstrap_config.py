"""bootstrap.toml: defaults, overrides, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.config import (
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
