"""The link handshake between two NodeCores over an in-memory link (DESIGN §6).

``Net`` (tests/unit/corenet.py) runs real cores on both ends; ``Solo`` runs one
core while the test plays the other side frame by frame, to send what an honest
peer never would.
"""

from __future__ import annotations

import dataclasses

import pytest

from p2pchat.core import LinkConfig, NodeConfig
from p2pchat.core.events import (
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    DataReceived,
    Dial,
    Effect,
    LinkEstablished,
    LinkLost,
    PeerConnected,
    PeerDisconnected,
    TimerExpired,
    Transmit,
)
from p2pchat.core.link import link_transcript
from p2pchat.crypto import Domain
from p2pchat.errors import CloseCode
from p2pchat.identity import Identity
from p2pchat.wire import Auth, Frame, Hello, Ping, Pong, Ready, encode_frame
from p2pchat.wire.frames import NONCE_SIZE
from tests.unit.corenet import (
    START,
    Net,
    Solo,
    cert_fingerprint,
    make_identity,
    only,
    sent_frames,
)

CLIENT_NONCE = b"\xcc" * NONCE_SIZE


def pair(**kwargs: object) -> Net:
    net = Net(**kwargs)  # type: ignore[arg-type]
    net.add("client")
    net.add("server")
    return net


def closes(effects: list[Effect]) -> list[tuple[CloseCode, str]]:
    return [(e.code, e.reason) for e in only(effects, CloseLink)]


def close_codes(effects: list[Effect]) -> list[CloseCode]:
    return [code for code, _ in closes(effects)]


def hello_from(identity: Identity, nonce: bytes = CLIENT_NONCE) -> Hello:
    return Hello(did=identity.did, nonce=nonce, name=identity.name, agent="raw")


def client_proof(
    client: Identity, server: Identity, server_hello: Hello, *, fingerprint: bytes,
    nonce: bytes = CLIENT_NONCE,
) -> Auth:
    transcript = link_transcript("client", fingerprint, nonce, server_hello.nonce, client.did,
                                 server.did)
    return Auth(signature=client.sign(Domain.LINK, transcript))


# --- the happy path ---------------------------------------------------------------------


def test_handshake_completes_and_both_sides_see_the_other() -> None:
    net = pair()
    client_link, server_link = net.establish("client", "server")
    net.settle()
    assert [PeerConnected(net.did("server"), "server", client_link, net.address_of["server"],
                          True)] == net.of("client", PeerConnected)
    [at_server] = net.of("server", PeerConnected)
    assert (net.did("client"), "client", server_link, False) == (
        at_server.did, at_server.name, at_server.link_id, at_server.outbound)
    assert [] == net.of("client", CloseLink) + net.of("server", CloseLink)
    assert [net.did("server")] == [p.did for p in net.cores["client"].peers(net.now)]
    assert [net.did("client")] == [p.did for p in net.cores["server"].peers(net.now)]


def test_handshake_messages_follow_the_documented_order() -> None:
    net = pair()
    seen: list[tuple[str, str]] = []

    def record(src: str, dst: str, data: bytes) -> bool:
        seen.extend((src, f.TAG) for f in sent_frames([Transmit(0, data)]))
        return True

    net.route = record
    net.establish("client", "server")
    net.settle()
    expected = [("client", "hello"), ("server", "hello"), ("server", "auth"), ("client", "auth"),
                ("server", "ready")]
    assert expected == seen[:5]
    net.run_until(START + 60)
    after = [tag for _, tag in seen[5:]]
    # each side announces its (here: no) channels once, then only keepalive
    assert 2 == after.count("subscribe")
    assert {"ping", "pong", "subscribe"} >= set(after), "after ready: subscribe and keepalive"


def test_hello_carries_name_agent_and_a_fresh_nonce() -> None:
    solo = Solo(make_identity(5, "carol"))
    server = make_identity(6)
    [first] = sent_frames(solo.dial_out(server, 1))
    [second] = sent_frames(solo.dial_out(server, 2))
    assert isinstance(first, Hello)
    assert isinstance(second, Hello)
    assert (solo.identity.did, "carol", "test") == (first.did, first.name, first.agent)
    assert NONCE_SIZE == len(first.nonce)
    assert first.nonce != second.nonce


def test_server_waits_for_the_client_to_speak() -> None:
    assert [] == Solo().accept()


def test_honest_raw_client_is_accepted() -> None:
    """Control for the raw attacks below: the same steps with a correct proof succeed."""
    solo, client = Solo(), make_identity(7, "raw")
    solo.accept()
    server_hello, server_auth = sent_frames(solo.feed(1, hello_from(client)))
    assert isinstance(server_hello, Hello)
    assert isinstance(server_auth, Auth)
    effects = solo.feed(1, client_proof(client, solo.identity, server_hello,
                                        fingerprint=solo.fingerprint))
    assert Ready() == sent_frames(effects)[0]
    assert [client.did] == [e.did for e in only(effects, PeerConnected)]


# --- expected DID --------------------------------------------------------------------------


def test_expected_did_mismatch_is_refused_before_speaking() -> None:
    net = pair()
    net.add("impostor")
    expected = net.did("impostor")
    net.handle("client", ConnectRequested(1, net.address_of["server"], expected))
    [(_, dial)] = net.dials
    client_link, _ = net.complete_dial("client", dial)
    net.settle()

    [close] = net.of("client", CloseLink)
    assert (client_link, CloseCode.UNEXPECTED_PEER) == (close.link_id, close.code)
    assert net.did("server") in close.reason
    assert expected in close.reason
    assert "10.0.0.2:7445" in close.reason
    assert [ConnectFinished(1, None, close.reason)] == net.of("client", ConnectFinished)
    assert [] == sent_frames(net.effects["client"]), "nothing is sent to the wrong peer"
    assert [] == net.of("client", PeerConnected) + net.of("server", PeerConnected)
    assert [] == net.cores["client"].wanted(), "a first connect that failed is forgotten"


def test_expected_did_match_connects() -> None:
    net = pair()
    net.handle("client", ConnectRequested(1, net.address_of["server"], net.did("server")))
    [(_, dial)] = net.dials
    net.complete_dial("client", dial)
    net.settle()
    assert [ConnectFinished(1, net.did("server"), None)] == net.of("client", ConnectFinished)


# --- replayed and relayed proofs ---------------------------------------------------------------


def capture_handshake(net: Net) -> dict[tuple[str, str], Frame]:
    """Run client -> server and return the handshake frames by (sender, tag)."""
    captured: dict[tuple[str, str], Frame] = {}

    def record(src: str, dst: str, data: bytes) -> bool:
        for f in sent_frames([Transmit(0, data)]):
            captured.setdefault((src, f.TAG), f)
        return True

    net.route = record
    net.establish("client", "server")
    net.settle()
    net.route = None
    return captured


def test_proof_replayed_into_another_session_fails() -> None:
    net = pair()
    captured = capture_handshake(net)
    hello, auth = captured["client", "hello"], captured["client", "auth"]

    # An attacker replays the client's hello and proof on a new link to the same server.
    server = net.cores["server"]
    fingerprint = cert_fingerprint(net.identities["server"])
    assert [] == server.handle(LinkEstablished(999, False, ("192.0.2.66", 1), fingerprint),
                               net.now)
    reply = server.handle(DataReceived(999, encode_frame(hello)), net.now)
    new_hello = sent_frames(reply, 999)[0]
    assert isinstance(new_hello, Hello)
    old_hello = captured["server", "hello"]
    assert isinstance(old_hello, Hello)
    assert old_hello.nonce != new_hello.nonce, "each session has a fresh server nonce"
    effects = server.handle(DataReceived(999, encode_frame(auth)), net.now)
    [(code, reason)] = closes(effects)
    assert CloseCode.AUTH_FAILED == code
    assert "does not verify for this session" in reason
    assert [] == only(effects, PeerConnected)
    assert [net.did("client")] == [p.did for p in server.peers(net.now)], "real session untouched"


def test_proof_relayed_to_another_server_fails() -> None:
    net = pair()
    net.add("victim")
    captured = capture_handshake(net)
    victim = net.cores["victim"]
    fingerprint = cert_fingerprint(net.identities["victim"])
    victim.handle(LinkEstablished(5, False, ("192.0.2.66", 1), fingerprint), net.now)
    victim.handle(DataReceived(5, encode_frame(captured["client", "hello"])), net.now)
    effects = victim.handle(DataReceived(5, encode_frame(captured["client", "auth"])), net.now)
    assert [CloseCode.AUTH_FAILED] == close_codes(effects)
    assert [] == victim.peers(net.now)


def test_server_proof_for_another_nonce_fails_at_the_client() -> None:
    solo, server = Solo(), make_identity(9, "server")
    [client_hello] = sent_frames(solo.dial_out(server))
    assert isinstance(client_hello, Hello)
    server_hello = Hello(did=server.did, nonce=b"\x55" * 32, name="", agent="raw")
    stale = link_transcript("server", cert_fingerprint(server), b"\x01" * 32, server_hello.nonce,
                            solo.identity.did, server.did)
    effects = solo.feed(1, server_hello, Auth(signature=server.sign(Domain.LINK, stale)))
    assert [CloseCode.AUTH_FAILED] == close_codes(effects)
    assert [] == only(effects, PeerConnected)


def test_server_proof_signed_for_another_domain_fails() -> None:
    solo, server = Solo(), make_identity(9, "server")
    [client_hello] = sent_frames(solo.dial_out(server))
    assert isinstance(client_hello, Hello)
    server_hello = Hello(did=server.did, nonce=b"\x55" * 32, name="", agent="raw")
    transcript = link_transcript("server", cert_fingerprint(server), client_hello.nonce,
                                 server_hello.nonce, solo.identity.did, server.did)
    effects = solo.feed(1, server_hello, Auth(signature=server.sign(Domain.ENVELOPE, transcript)))
    assert [CloseCode.AUTH_FAILED] == close_codes(effects)


def test_server_proof_echoed_back_does_not_authenticate_the_client() -> None:
    solo, client = Solo(), make_identity(7, "raw")
    solo.accept()
    _, server_auth = sent_frames(solo.feed(1, hello_from(client)))
    effects = solo.feed(1, server_auth)
    assert [CloseCode.AUTH_FAILED] == close_codes(effects)


TRANSCRIPT_ARGS = ("client", b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, "did:key:zA", "did:key:zB")


def test_transcript_binds_every_input() -> None:
    base = link_transcript(*TRANSCRIPT_ARGS)
    changed = ["server", b"\x09" * 32, b"\x09" * 32, b"\x09" * 32, "did:key:zC", "did:key:zC"]
    for index, value in enumerate(changed):
        args = list(TRANSCRIPT_ARGS)
        args[index] = value
        assert base != link_transcript(*args), index  # type: ignore[arg-type]


def test_transcript_is_not_ambiguous_between_fields() -> None:
    # Moving bytes from one field to the next must change the statement.
    a = link_transcript("client", b"ab", b"c", b"", "d", "e")
    b = link_transcript("client", b"a", b"bc", b"", "d", "e")
    assert a != b


# --- man in the middle ---------------------------------------------------------------------


def test_client_that_saw_another_certificate_rejects_the_server_proof() -> None:
    net = pair()
    net.establish("client", "server", client_fingerprint=b"\x66" * 32)
    net.settle()
    [(code, reason)] = closes(net.effects["client"])
    assert CloseCode.AUTH_FAILED == code
    assert "does not verify for this session" in reason
    assert [] == net.of("client", PeerConnected) + net.of("server", PeerConnected)
    assert 0 == net.cores["server"].link_count()


def test_server_rejects_a_proof_made_for_another_certificate() -> None:
    """The client signed what it saw: a MITM's certificate fingerprint, not the server's."""
    solo, client = Solo(), make_identity(7, "raw")
    solo.accept()
    server_hello, _ = sent_frames(solo.feed(1, hello_from(client)))
    assert isinstance(server_hello, Hello)
    proof = client_proof(client, solo.identity, server_hello, fingerprint=b"\x66" * 32)
    effects = solo.feed(1, proof)
    assert [CloseCode.AUTH_FAILED] == close_codes(effects)
    assert [] == only(effects, PeerConnected)
    assert Ready() not in sent_frames(effects)


def test_hello_that_contradicts_the_certificate_is_refused() -> None:
    net = pair()
    net.add("mitm")
    # The client reaches the server through a MITM whose certificate key is its own.
    net.establish("client", "server", cert_key=net.identities["mitm"].public_key.raw)
    net.settle()
    [(code, reason)] = closes(net.effects["client"])
    assert CloseCode.AUTH_FAILED == code
    assert net.did("server") in reason
    assert net.did("mitm") in reason


@pytest.mark.parametrize("key", [b"", b"\x01" * 31, b"\x01" * 33])
def test_certificate_key_that_is_not_ed25519_is_refused(key: bytes) -> None:
    solo = Solo()
    effects = solo.handle(LinkEstablished(1, True, ("192.0.2.7", 7445), b"\x00" * 32,
                                          peer_cert_key=key))
    assert [CloseCode.AUTH_FAILED] == close_codes(effects)
    assert [] == sent_frames(effects)


# --- protocol errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [Ping(nonce=1), Pong(nonce=1), Auth(signature=b"\x00" * 64),
                                   Ready()], ids=lambda f: f.TAG)
def test_server_refuses_frames_before_hello(frame: Frame) -> None:
    solo = Solo()
    solo.accept()
    effects = solo.feed(1, frame)
    [(code, reason)] = closes(effects)
    assert CloseCode.PROTOCOL_ERROR == code
    assert f"unexpected {frame.TAG!r} frame before authentication" in reason
    assert [] == solo.core.peers(solo.now)


@pytest.mark.parametrize("frame", [Ping(nonce=1), Ready(), Auth(signature=b"\x00" * 64)],
                         ids=lambda f: f.TAG)
def test_client_refuses_frames_before_the_server_hello(frame: Frame) -> None:
    solo = Solo()
    solo.dial_out(make_identity(9))
    assert [CloseCode.PROTOCOL_ERROR] == close_codes(solo.feed(1, frame))


def test_second_hello_is_a_protocol_error() -> None:
    solo, client = Solo(), make_identity(7)
    solo.accept()
    solo.feed(1, hello_from(client))
    assert [CloseCode.PROTOCOL_ERROR] == close_codes(solo.feed(1, hello_from(client)))


def test_ping_after_hello_but_before_auth_is_a_protocol_error() -> None:
    solo, client = Solo(), make_identity(7)
    solo.accept()
    solo.feed(1, hello_from(client))
    assert [CloseCode.PROTOCOL_ERROR] == close_codes(solo.feed(1, Ping(nonce=1)))


@pytest.mark.parametrize("frame", [Ready(), Auth(signature=b"\x00" * 64)], ids=lambda f: f.TAG)
def test_handshake_frames_on_an_open_link_are_protocol_errors(frame: Frame) -> None:
    net = pair()
    _, server_link = net.establish("client", "server")
    net.settle()
    effects = net.handle("server", DataReceived(server_link, encode_frame(frame)))
    [(code, reason)] = closes(effects)
    assert CloseCode.PROTOCOL_ERROR == code
    assert "on an open link" in reason
    assert [net.did("client")] == [e.did for e in only(effects, PeerDisconnected)]


def test_hello_on_an_open_link_is_a_protocol_error() -> None:
    net = pair()
    client_link, _ = net.establish("client", "server")
    net.settle()
    hello = hello_from(net.identities["server"])
    effects = net.handle("client", DataReceived(client_link, encode_frame(hello)))
    assert [CloseCode.PROTOCOL_ERROR] == close_codes(effects)


@pytest.mark.parametrize("did", ["did:key:zabc", "not a did", "did:key:z6MkiTBz1ymuepAQ4HEHYSF1"])
def test_hello_with_an_invalid_did_is_refused(did: str) -> None:
    solo = Solo()
    solo.accept()
    effects = solo.feed(1, Hello(did=did, nonce=CLIENT_NONCE, name="", agent=""))
    [(code, reason)] = closes(effects)
    assert CloseCode.PROTOCOL_ERROR == code
    assert "invalid DID in hello" in reason


def test_garbage_bytes_close_the_link() -> None:
    solo = Solo()
    solo.accept()
    [(code, reason)] = closes(solo.feed(1, b"\x00\x00\x00\x02\xc1\xc1"))
    assert CloseCode.PROTOCOL_ERROR == code
    assert reason.startswith("bad frame: ")


def test_oversized_length_prefix_closes_with_frame_too_large() -> None:
    solo = Solo()
    solo.accept()
    assert [CloseCode.FRAME_TOO_LARGE] == close_codes(solo.feed(1, b"\x00\x10\x00\x01"))


def test_link_frame_limit_comes_from_the_config() -> None:
    solo = Solo(config=NodeConfig(link=LinkConfig(max_frame_size=1024)))
    solo.accept()
    assert [] == solo.feed(1, b"\x00\x00\x04\x00")  # 1024: allowed, waits for the rest
    solo.accept(2)
    assert [CloseCode.FRAME_TOO_LARGE] == close_codes(solo.feed(2, b"\x00\x00\x04\x01"))


def test_closed_link_ignores_further_data() -> None:
    solo = Solo()
    solo.accept()
    solo.feed(1, Ping(nonce=1))
    assert [] == solo.feed(1, hello_from(make_identity(7)))


def test_close_reasons_are_bounded() -> None:
    solo = Solo()
    address = ("h" * 300 + ".example", 7445)
    [dial] = solo.handle(ConnectRequested(1, address, make_identity(10).did))
    assert isinstance(dial, Dial)
    effects = solo.dial_out(make_identity(9), dial_id=dial.dial_id, address=address)
    [(code, reason)] = closes(effects)
    assert CloseCode.UNEXPECTED_PEER == code
    assert len(reason) <= 200


def test_flood_of_frames_is_rate_limited() -> None:
    config = NodeConfig(link=LinkConfig(max_frames_per_second=1.0, frame_burst=10.0))
    net = Net(config)
    net.add("client")
    net.add("server")
    _, server_link = net.establish("client", "server")
    net.settle()
    effects = net.handle("server", DataReceived(server_link, encode_frame(Ping(nonce=1)) * 20))
    assert [CloseCode.RATE_LIMITED] == close_codes(effects)


# --- connecting to oneself -------------------------------------------------------------------


def test_peer_presenting_our_own_did_is_refused() -> None:
    solo = Solo()
    solo.accept()
    effects = solo.feed(1, hello_from(solo.identity))
    [(code, reason)] = closes(effects)
    assert CloseCode.REFUSED == code
    assert "itself" in reason
    assert [] == sent_frames(effects), "no proof is given to a peer claiming our DID"


def test_node_dialling_its_own_address_is_refused() -> None:
    net = Net()
    net.add("a")
    net.handle("a", ConnectRequested(1, net.address_of["a"]))
    [(_, dial)] = net.dials
    net.complete_dial("a", dial)
    net.settle()
    assert [CloseCode.REFUSED] == [c.code for c in net.of("a", CloseLink)]
    [finished] = net.of("a", ConnectFinished)
    assert finished.did is None
    assert finished.error is not None
    assert "itself" in finished.error
    assert [] == net.of("a", PeerConnected)
    assert 0 == net.cores["a"].link_count()
    assert [] == net.cores["a"].wanted()


def test_connect_to_own_did_is_refused_without_dialling() -> None:
    solo = Solo()
    effects = solo.handle(ConnectRequested(3, ("192.0.2.1", 1), solo.identity.did))
    assert [ConnectFinished(3, None, "that is this node's own DID")] == effects
    assert [] == only(effects, Dial)


# --- handshake timeout ---------------------------------------------------------------------


def test_handshake_timeout_closes_a_silent_link() -> None:
    net = pair()
    net.route = lambda src, dst, data: False  # nothing gets through
    net.establish("client", "server")
    timeout = net.config.link.handshake_timeout
    assert START + timeout == net.cores["client"].next_deadline()
    assert START + timeout == net.cores["server"].next_deadline()
    net.run_until(START + timeout - 0.001)
    assert [] == net.of("client", CloseLink) + net.of("server", CloseLink)
    net.run_until(START + timeout)
    [(code, reason)] = closes(net.effects["client"])
    assert CloseCode.HANDSHAKE_TIMEOUT == code
    assert f"within {timeout:g} s" in reason
    assert "await-hello" in reason
    for name in ("client", "server"):
        assert 0 == net.cores[name].link_count()
        assert net.cores[name].next_deadline() is None


def test_handshake_timeout_on_the_server_side() -> None:
    solo = Solo()
    solo.accept()
    solo.feed(1, hello_from(make_identity(7)))  # then the client goes quiet
    deadline = solo.core.next_deadline()
    assert START + 10.0 == deadline
    solo.now = START + 9.5
    assert [] == solo.handle(TimerExpired())
    solo.now = START + 10.0
    [(code, reason)] = closes(solo.handle(TimerExpired()))
    assert CloseCode.HANDSHAKE_TIMEOUT == code
    assert "await-auth" in reason
    assert solo.core.next_deadline() is None


def test_handshake_timeout_fails_the_connect_request() -> None:
    net = pair()
    net.route = lambda src, dst, data: src == "client"  # the server's replies are lost
    net.handle("client", ConnectRequested(1, net.address_of["server"]))
    [(_, dial)] = net.dials
    net.complete_dial("client", dial)
    net.run_until(START + 60)
    [finished] = net.of("client", ConnectFinished)
    assert finished.did is None
    assert "handshake not finished" in str(finished.error)
    assert [] == net.cores["client"].wanted()


def test_handshake_timeout_is_configurable() -> None:
    config = NodeConfig(link=LinkConfig(handshake_timeout=2.5))
    solo = Solo(config=config)
    solo.accept()
    assert START + 2.5 == solo.core.next_deadline()


def test_finished_handshake_replaces_the_timeout_by_keepalive() -> None:
    net = pair()
    net.establish("client", "server")
    net.settle()
    assert START + net.config.link.keepalive_interval == net.cores["client"].next_deadline()


def test_lost_link_during_handshake_is_forgotten() -> None:
    net = pair()
    client_link, _ = net.establish("client", "server")
    net.handle("client", LinkLost(client_link, "gone"))
    assert 0 == net.cores["client"].link_count()
    assert net.cores["client"].next_deadline() is None
    assert [] == net.of("client", PeerDisconnected)


def test_events_for_unknown_links_are_ignored() -> None:
    solo = Solo()
    assert [] == solo.handle(DataReceived(42, b"\x00\x00\x00\x01\xc0"))
    assert [] == solo.handle(LinkLost(42, "gone"))


def test_unknown_event_type_is_refused() -> None:
    """Event is a closed union, so mypy refuses this call; at run time the dispatch's
    ``assert_never`` does."""

    @dataclasses.dataclass(frozen=True)
    class Strange:
        pass

    with pytest.raises(AssertionError, match="Strange"):
        Solo().handle(Strange())  # type: ignore[arg-type]
