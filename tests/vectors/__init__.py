"""Conformance vectors: language-neutral inputs and the results p2pchat computes."""
