"""A member that forwards a forged envelope is cut off; the node and honest peers carry on."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

import pytest

from p2pchat.channel.envelope import channel_topic, decode_envelope
from p2pchat.channel.invite import parse_channel_id, parse_invite
from p2pchat.core.channels import topic_for
from p2pchat.errors import CloseCode
from p2pchat.wire import Envelopes, Subscribe, Summary
from tests.integration.channelkit import history, shared_channel, wait_until
from tests.integration.nodeproc import NodeProcess
from tests.integration.rawclient import new_identity, raw_connect

pytestmark = pytest.mark.integration


def test_forged_envelope_closes_the_link_and_changes_nothing(
    spawn: Callable[..., NodeProcess],
) -> None:
    server = spawn("S")
    honest = spawn("H")
    channel, invite = shared_channel(server, honest, "guarded")
    assert 0 == server.cli("send", channel, "before").returncode
    wait_until(lambda: len(history(honest, channel)) == 1, 10, "the first message")
    before = history(server, channel)
    cid = parse_channel_id(channel)
    assert cid == parse_invite(invite).channel
    me = new_identity("forger")
    nonce_c = os.urandom(32)

    async def attack() -> str:
        async with raw_connect(server.port) as client:
            hello, _ = await client.authenticate(me, nonce_c, server.did)
            topic = topic_for(cid, nonce_c + hello.nonce)
            client.send(Subscribe(topics=(topic,)))
            # the server subscribes and sends its summary and, on ours, its envelopes
            client.send(Summary(topic=topic, entries=()))
            raws: list[bytes] = []
            while len(raws) < 2:
                frame = await client.recv()
                if isinstance(frame, Envelopes):
                    raws += frame.items
            forged = bytearray(raws[1])  # the "before" message...
            forged[-80] ^= 0x01  # ...with one ciphertext byte changed under its signature
            env = decode_envelope(bytes(forged), channel_topic(cid))
            assert env.author == server.did
            assert env.id != decode_envelope(raws[1], channel_topic(cid)).id
            client.send(Envelopes(topic=topic, items=(bytes(forged),)))
            event = await client.closed(5.0)
            assert int(CloseCode.PROTOCOL_ERROR) == event.error_code
            return event.reason_phrase

    reason = asyncio.run(attack())
    assert "sent an invalid envelope" in reason and "signature" in reason
    assert before == history(server, channel)
    assert 0 == server.cli("send", channel, "after").returncode
    wait_until(lambda: [m["text"] for m in history(honest, channel)] == ["before", "after"], 10,
               "the honest member to keep receiving")
    peers = json.loads(server.cli("peers", "--json").stdout)
    assert [honest.did] == [p["did"] for p in peers]
