"""``p2pchat bench``: the node measured side by side with raw aioquic (DESIGN §13).

:mod:`p2pchat.bench.runner` drives the measurements and formats the report;
:mod:`p2pchat.bench.server` is the server side (run as a child process by
default); :mod:`p2pchat.bench.rawquic` is the raw aioquic floor;
:mod:`p2pchat.bench.stats` computes the summaries. This module imports none of
them, so ``python -m p2pchat.bench.server`` starts without a runpy warning.
"""
