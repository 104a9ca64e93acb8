from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.nodeproc import FAST_CONFIG, NodeProcess


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths are limited to 107 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="p2p-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn(short_tmp: Path) -> Iterator[Callable[..., NodeProcess]]:
    nodes: list[NodeProcess] = []

    def make(name: str, port: int = 0, config: str | None = FAST_CONFIG) -> NodeProcess:
        node = NodeProcess(short_tmp / name, port, config)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.cleanup()
