"""Channels: signed, encrypted envelopes materialised into an Automerge document.

The only package that imports automerge.
"""
