"""Moderation conformance vectors (docs/protocol.md §11)."""
