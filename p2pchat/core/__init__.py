"""The sans-IO core: protocol logic that takes time, randomness and input as
arguments and returns effects. Nothing here may import asyncio, socket, time,
random, aioquic.asyncio, zeroconf or aiosqlite (tests/test_layering.py)."""

from p2pchat.core.config import LinkConfig, NodeConfig
from p2pchat.core.node import NodeCore, PeerInfo

__all__ = ["LinkConfig", "NodeConfig", "NodeCore", "PeerInfo"]
