"""Configuration as data: every invalid value is refused with ConfigError naming it."""

from __future__ import annotations

import math
from typing import Any

import pytest

from p2pchat.core import LinkConfig, NodeConfig
from p2pchat.errors import ConfigError, LocalError
from p2pchat.wire import MAX_FRAME_SIZE


def test_defaults_are_valid() -> None:
    config = NodeConfig()
    assert LinkConfig() == config.link
    assert config.link.idle_timeout > config.link.keepalive_interval
    assert config.reconnect_base <= config.reconnect_max


def test_config_error_is_a_local_error() -> None:
    assert issubclass(ConfigError, LocalError)


POSITIVE_LINK = ["handshake_timeout", "keepalive_interval", "idle_timeout",
                 "max_frames_per_second", "frame_burst"]
NOT_POSITIVE: list[Any] = [0, 0.0, -1, -0.5, math.nan, "10", None, True, [1]]


@pytest.mark.parametrize("name", POSITIVE_LINK)
@pytest.mark.parametrize("value", NOT_POSITIVE, ids=repr)
def test_link_numbers_must_be_positive(name: str, value: Any) -> None:
    kwargs: dict[str, Any] = {name: value}
    if name == "keepalive_interval":
        kwargs["idle_timeout"] = 1e9
    with pytest.raises(ConfigError, match=rf"link\.{name} must be a positive number"):
        LinkConfig(**kwargs)


@pytest.mark.parametrize(("keepalive", "idle"), [(5.0, 5.0), (10.0, 5.0), (20.0, 19.9)])
def test_idle_timeout_must_exceed_keepalive(keepalive: float, idle: float) -> None:
    with pytest.raises(ConfigError, match=r"idle_timeout \(.*\) must exceed link\.keepalive"):
        LinkConfig(keepalive_interval=keepalive, idle_timeout=idle)


@pytest.mark.parametrize("value", [0, 1023, MAX_FRAME_SIZE + 1, 2048.0, "4096", None, True])
def test_max_frame_size_must_be_an_integer_in_range(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"link\.max_frame_size"):
        LinkConfig(max_frame_size=value)


@pytest.mark.parametrize("value", [1024, 65536, MAX_FRAME_SIZE])
def test_max_frame_size_accepts_the_range(value: int) -> None:
    assert value == LinkConfig(max_frame_size=value).max_frame_size


@pytest.mark.parametrize("name", ["dial_timeout", "reconnect_base", "reconnect_max"])
@pytest.mark.parametrize("value", NOT_POSITIVE, ids=repr)
def test_node_numbers_must_be_positive(name: str, value: Any) -> None:
    kwargs: dict[str, Any] = {name: value}
    if name == "reconnect_base":
        kwargs["reconnect_max"] = 1e9
    with pytest.raises(ConfigError, match=f"{name} must be a positive number"):
        NodeConfig(**kwargs)


def test_reconnect_max_must_be_at_least_base() -> None:
    with pytest.raises(ConfigError, match="reconnect_max must be at least reconnect_base"):
        NodeConfig(reconnect_base=10.0, reconnect_max=5.0)


def test_reconnect_max_may_equal_base() -> None:
    assert 3.0 == NodeConfig(reconnect_base=3.0, reconnect_max=3.0).reconnect_max


@pytest.mark.parametrize("name", ["max_links", "max_wanted_peers"])
@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "8", None, True, False], ids=repr)
def test_counts_must_be_positive_integers(name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be a positive integer"):
        NodeConfig(**{name: value})


def test_configs_are_frozen() -> None:
    config = NodeConfig()
    with pytest.raises(AttributeError):
        config.max_links = 3  # type: ignore[misc]


def test_discovery_settings_parse_and_validate() -> None:
    from p2pchat.home import parse_settings

    settings = parse_settings('[node]\nmdns = false\nbootstrap = ["127.0.0.1:7446", '
                              '"[::1]:7447"]\n')
    assert settings.mdns is False
    assert (("127.0.0.1", 7446), ("::1", 7447)) == settings.bootstrap
    assert parse_settings("").mdns is True
    assert () == parse_settings("").bootstrap
    for bad, message in (('mdns = "yes"', "node.mdns must be true or false"),
                         ('bootstrap = "127.0.0.1:1"', "node.bootstrap must be a list"),
                         ("bootstrap = [1]", "node.bootstrap must be a list"),
                         ('bootstrap = ["nope"]', "node.bootstrap"),
                         ("bootstrap = [" + ", ".join(['"127.0.0.1:1"'] * 9) + "]",
                          "at most 8")):
        with pytest.raises(ConfigError, match=message):
            parse_settings(f"[node]\n{bad}\n")
