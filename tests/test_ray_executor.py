"""What the Ray executor does around Ray itself, without a cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from orchestrator.ray_executor import DRIVER_SETTINGS, WorkerActor, _driver_settings


@pytest.mark.parametrize("key", sorted(DRIVER_SETTINGS))
def test_driver_settings_hold_only_while_ray_reads_them(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(key, raising=False)
    with _driver_settings():
        assert os.environ[key] == DRIVER_SETTINGS[key]
    assert key not in os.environ  # the test processes inherit this environment


@pytest.mark.parametrize("key", sorted(DRIVER_SETTINGS))
def test_driver_settings_leave_the_users_own(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key, "1234")
    with _driver_settings():
        assert os.environ[key] == "1234"
    assert os.environ[key] == "1234"


def test_a_released_relay_has_the_next_worker_process_ready_at_once(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("def test_a():\n    pass\n")
    relay = WorkerActor()  # a warm relay, as `orchestrator up` keeps them
    init = {"t": "init", "worker": "gw0", "args": ["-p", "no:cacheprovider"]}
    relay.start(init, str(tmp_path), dict(os.environ), sys.executable)
    relay.release(grace=5.0)
    # Made by release itself: the relay's watcher would only look again seconds later, and
    # a run starting right away (the next CI step) would start a process of its own.
    spare = relay._spare
    assert spare is not None
    started = spare.take()
    assert started.proc.poll() is None
    started.proc.kill()
    started.proc.wait()
    relay._spare = spare  # emptied: the relay's watcher makes no other for this session
