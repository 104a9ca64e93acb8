"""Adapters that move bytes: the aioquic link transport."""
