"""The run marker that tells whether the last run may have lost stored writes."""

from __future__ import annotations

from pathlib import Path

from p2pchat.runtime import crashmark


def test_a_clean_stop_leaves_the_head_known(tmp_path: Path) -> None:
    assert crashmark.begin_run(tmp_path, "boot-1") is False
    crashmark.end_run(tmp_path)
    assert not (tmp_path / crashmark.MARKER_NAME).exists()
    assert crashmark.begin_run(tmp_path, "boot-1") is False


def test_a_killed_process_on_a_machine_that_kept_running_loses_nothing(tmp_path: Path) -> None:
    crashmark.begin_run(tmp_path, "boot-1")  # no end_run: SIGKILL
    assert crashmark.begin_run(tmp_path, "boot-1") is False


def test_an_unclean_stop_across_a_reboot_makes_the_head_unsure(tmp_path: Path) -> None:
    crashmark.begin_run(tmp_path, "boot-1")  # power cut
    assert crashmark.begin_run(tmp_path, "boot-2") is True
    crashmark.end_run(tmp_path)
    assert crashmark.begin_run(tmp_path, "boot-2") is False


def test_without_a_boot_id_any_unclean_stop_counts(tmp_path: Path) -> None:
    crashmark.begin_run(tmp_path, "")
    assert crashmark.begin_run(tmp_path, "") is True
    (tmp_path / crashmark.MARKER_NAME).write_bytes(b"\xff\xfe")  # garbage marker
    assert crashmark.begin_run(tmp_path, "boot-1") is True
