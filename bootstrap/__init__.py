"""p2pchat bootstrap server: discovery and ciphertext persistence for p2pchat nodes.

It imports :mod:`p2pchat.wire` and the link layer; p2pchat never imports it.
"""
