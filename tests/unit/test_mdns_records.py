"""mDNS records without a network: naming, TXT parsing, interface plans, offer limits."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zeroconf import InterfaceChoice, IPVersion

from p2pchat.crypto import secret_key_from_seed
from p2pchat.discovery.mdns import (
    MAX_ADDRESSES_PER_RECORD,
    SERVICE_TYPE,
    MdnsDiscovery,
    OfferLimiter,
    Plan,
    Record,
    RecordError,
    instance_name,
    parse_record,
    plan_for,
    service_name,
    txt_properties,
)
from p2pchat.identity import did_from_public_key


def _did(n: int) -> str:
    return did_from_public_key(secret_key_from_seed(bytes([n]) * 32).public_key)


OWN, PEER = _did(1), _did(2)
SECP256K1_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"


def txt(did: str | bytes | None = PEER, v: bytes | None = b"1") -> dict[bytes, bytes | None]:
    props: dict[bytes, bytes | None] = {}
    if did is not None:
        props[b"did"] = did.encode() if isinstance(did, str) else did
    if v is not None:
        props[b"v"] = v
    return props


def parse(props: Mapping[bytes, bytes | None], port: Any = 7445,
          addresses: tuple[str, ...] = ("10.0.0.2",), ipv6: bool = False) -> Record:
    return parse_record(props, port, addresses, own_did=OWN, ipv6=ipv6)


def test_names_and_txt_come_from_the_did() -> None:
    assert "p2pchat-" + PEER[-16:] == instance_name(PEER)
    assert f"p2pchat-{PEER[-16:]}._p2pchat._udp.local." == service_name(PEER)
    assert "_p2pchat._udp.local." == SERVICE_TYPE
    assert {"did": PEER, "v": "1"} == txt_properties(PEER)


def test_a_good_record_gives_its_did_and_addresses() -> None:
    assert Record(PEER, (("10.0.0.2", 7445),)) == parse(txt())


def test_our_own_txt_round_trips() -> None:
    props = {k.encode(): v.encode() for k, v in txt_properties(PEER).items()}
    assert PEER == parse(props).did


@pytest.mark.parametrize(("props", "reason"), [
    (txt(did=None), "no did="),
    (txt(v=None), "no v="),
    (txt(v=b"2"), "unsupported version"),
    (txt(v=b"\xff"), "v= is not UTF-8"),
    (txt(did=b"did:key:\xff"), "did= is not UTF-8"),
    (txt(did="did:web:example.com"), "bad did"),
    (txt(did=SECP256K1_DID), "bad did"),
    (txt(did="did:key:z" + "1" * 5000), "bad did"),
    (txt(did=OWN), "our own DID"),
    ({b"did": None, b"v": b"1"}, "no did="),
])
def test_bad_txt_is_refused_with_the_reason(props: dict[bytes, bytes | None],
                                            reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        parse(props)


@pytest.mark.parametrize("port", [None, 0, -1, 65536, "7445", 7445.0])
def test_bad_port_is_refused(port: Any) -> None:
    with pytest.raises(RecordError, match="bad port"):
        parse(txt(), port=port)


def test_addresses_that_only_reach_this_host_or_nothing_are_dropped() -> None:
    junk = ("127.0.0.1", "127.9.9.9", "0.0.0.0", "224.0.0.251", "::1", "::",
            "fe80::1", "ff02::fb", "::ffff:10.0.0.9", "not-an-ip", "", "10.0.0.2%eth0")
    with pytest.raises(RecordError, match="no usable address"):
        parse(txt(), addresses=junk, ipv6=True)
    record = parse(txt(), addresses=(*junk, "192.168.1.7", "169.254.3.4"), ipv6=True)
    assert (("192.168.1.7", 7445), ("169.254.3.4", 7445)) == record.addresses


def test_ipv6_is_taken_only_when_the_node_listens_on_ipv6() -> None:
    addresses = ("2001:db8::7", "10.0.0.2")
    assert (("10.0.0.2", 7445),) == parse(txt(), addresses=addresses).addresses
    assert (("2001:db8::7", 7445), ("10.0.0.2", 7445)) == \
        parse(txt(), addresses=addresses, ipv6=True).addresses
    with pytest.raises(RecordError, match="no usable address"):
        parse(txt(), addresses=("2001:db8::7",))


def test_addresses_are_deduplicated_and_capped() -> None:
    many = tuple(f"10.0.1.{i}" for i in range(1, 100))
    record = parse(txt(), addresses=("10.0.1.1", "10.0.1.1", *many))
    assert MAX_ADDRESSES_PER_RECORD == len(record.addresses)
    assert [f"10.0.1.{i}" for i in range(1, 9)] == [a[0] for a in record.addresses]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.binary(max_size=8), st.none() | st.binary(max_size=80), max_size=6),
       st.none() | st.integers(min_value=-5, max_value=70000),
       st.lists(st.text(max_size=40), max_size=12), st.booleans())
def test_arbitrary_records_raise_only_record_error(props: dict[bytes, bytes | None],
                                                   port: int | None, addresses: list[str],
                                                   ipv6: bool) -> None:
    try:
        record = parse_record(props, port, addresses, own_did=OWN, ipv6=ipv6)
    except RecordError:
        return
    assert 0 < len(record.addresses) <= MAX_ADDRESSES_PER_RECORD


# --- interfaces -------------------------------------------------------------------------

HOST_IPS = ["127.0.0.1", "192.168.1.5", "10.0.0.2", "::1", "fe80::1", "2001:db8::5",
            "192.168.1.5"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_means_no_mdns(host: str) -> None:
    assert "listening on loopback only" == plan_for(host, HOST_IPS)


def test_a_specific_address_binds_and_advertises_only_that_one() -> None:
    assert Plan(["10.0.0.2"], IPVersion.V4Only, ["10.0.0.2"], False, "10.0.0.2") == \
        plan_for("10.0.0.2", HOST_IPS)
    assert Plan(["2001:db8::5"], IPVersion.V6Only, ["2001:db8::5"], True, "2001:db8::5") == \
        plan_for("2001:db8::5", HOST_IPS)


def test_the_wildcard_advertises_every_non_loopback_address() -> None:
    assert Plan(InterfaceChoice.All, IPVersion.V4Only, ["10.0.0.2", "192.168.1.5"], False,
                "10.0.0.2, 192.168.1.5") == plan_for("0.0.0.0", HOST_IPS)
    v6 = plan_for("::", HOST_IPS)
    assert isinstance(v6, Plan)
    assert (IPVersion.All, ["10.0.0.2", "192.168.1.5", "2001:db8::5"], True) == \
        (v6.ip_version, v6.addresses, v6.ipv6)


def test_the_wildcard_with_only_loopback_has_nothing_to_advertise() -> None:
    assert "no non-loopback address to advertise" == plan_for("0.0.0.0", ["127.0.0.1"])


def test_a_host_name_that_is_not_an_ip_is_not_advertised() -> None:
    assert isinstance(plan_for("example.org", HOST_IPS), str)


def test_a_loopback_node_does_not_start_mdns() -> None:
    node: Any = SimpleNamespace(identity=SimpleNamespace(did=OWN))
    discovery = MdnsDiscovery(node, ("127.0.0.1", 7445))

    async def lifecycle() -> None:
        await discovery.start()
        assert "off (listening on loopback only)" == discovery.status
        await discovery.close()

    asyncio.run(lifecycle())
    assert "off (listening on loopback only)" == discovery.status
    assert 0 == discovery.seen


# --- offer limits -----------------------------------------------------------------------

def test_a_record_is_offered_once_per_cooldown() -> None:
    limiter = OfferLimiter(rate=100.0, burst=100, cooldown=10.0)
    assert limiter.allow("x", 0.0)
    assert not limiter.allow("x", 0.1)
    assert not limiter.allow("x", 9.9)
    assert limiter.allow("y", 9.9)  # other records are not held up
    assert limiter.allow("x", 10.0)


def test_offers_over_all_records_follow_the_token_bucket() -> None:
    limiter = OfferLimiter(rate=2.0, burst=4, cooldown=1000.0)
    assert [True] * 4 + [False] == [limiter.allow(f"r{i}", 0.0) for i in range(5)]
    assert limiter.allow("r5", 0.5)  # one token back after half a second at 2/s
    assert not limiter.allow("r6", 0.5)
    assert [True, True] == [limiter.allow("r7", 10.0), limiter.allow("r8", 10.0)]


def test_a_flapping_record_is_offered_at_most_once_per_cooldown() -> None:
    limiter = OfferLimiter(rate=2.0, burst=16, cooldown=10.0)
    offered = sum(limiter.allow("flapping", t / 10) for t in range(600))  # 60 s, 10 Hz
    assert 6 == offered


def test_the_limiter_remembers_only_recent_records() -> None:
    limiter = OfferLimiter(rate=2.0, burst=16, cooldown=10.0)
    for i in range(10_000):
        limiter.allow(f"r{i}", i * 0.01)
    assert limiter.tracked() <= 16 + 2 * 10
