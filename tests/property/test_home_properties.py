"""Property tests of the home helpers: addresses round-trip, parsers fail only cleanly."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from p2pchat.core.events import format_address
from p2pchat.errors import ConfigError, LocalError
from p2pchat.home import Settings, parse_listen, parse_settings

hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@settings(max_examples=200)
@given(host=hostnames | ipv4 | ipv6, port=ports)
def test_formatted_addresses_parse_back(host: str, port: int) -> None:
    assert (host, port) == parse_listen(format_address((host, port)))


@settings(max_examples=300)
@given(text=st.text(max_size=40))
@example("host:\u00b2")  # superscript two: str.isdigit() is True, int() fails
@example("fe80::1")
def test_parse_listen_returns_or_raises_local_error(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except LocalError:
        return
    assert host
    assert 0 <= port <= 65535
    assert ":" not in host or text.strip().startswith("["), "bare IPv6 is ambiguous"


toml_scalars = (
    st.integers(-(2**63), 2**63 - 1).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.booleans().map(lambda b: "true" if b else "false")
    | st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=12)
    .map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3).map(
    lambda xs: "[" + ", ".join(xs) + "]")
keys = st.sampled_from([
    "listen", "max_links", "dial_timeout", "reconnect_base", "reconnect_max", "max_wanted_peers",
    "handshake_timeout", "keepalive_interval", "idle_timeout", "max_frame_size",
    "max_frames_per_second", "frame_burst", "bogus",
])


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines = [f"{k} = {v}" for k, v in draw(st.dictionaries(
        st.sampled_from(["node", "link", "other"]), toml_values, max_size=1)).items()]
    for section in draw(st.lists(st.sampled_from(["node", "link", "nodes"]), unique=True,
                                 max_size=2)):
        if any(line.startswith(f"{section} =") for line in lines):
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in draw(st.dictionaries(keys, toml_values,
                                                                 max_size=4)).items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=300)
@given(text=toml_documents())
@example("node = 5\n")  # a section that is not a table
def test_parse_settings_returns_or_raises_config_error(text: str) -> None:
    try:
        result = parse_settings(text, "config.toml")
    except ConfigError as exc:
        assert str(exc).startswith("config.toml: ")
        return
    assert isinstance(result, Settings)
