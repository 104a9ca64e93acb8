"""``p2pchat bench``: the node measured side by side with raw aioquic (DESIGN §13).

:mod:`p2pchat.bench.runner` drives the measurements, :mod:`p2pchat.bench.links`
measures link handshakes and round trips, :mod:`p2pchat.bench.budgets` holds the
budgets and gives the verdicts, :mod:`p2pchat.bench.text` formats the report;
:mod:`p2pchat.bench.server` is the server side (run as a child process by
default); :mod:`p2pchat.bench.rawquic` is the raw aioquic floor for links and
:mod:`p2pchat.bench.pipeline` the one for channels (the envelope pipeline with
no node); :mod:`p2pchat.bench.channels` runs the two-process channel
benchmarks and :mod:`p2pchat.bench.replicas` the in-process ones, with
:mod:`p2pchat.bench.observed` timestamping applied messages;
:mod:`p2pchat.bench.stats` computes the summaries. This module imports none of
them, so ``python -m p2pchat.bench.server`` starts without a runpy warning.
"""
