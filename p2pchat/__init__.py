"""p2pchat: a peer-to-peer, serverless chat node."""

__version__ = "0.1.0"
