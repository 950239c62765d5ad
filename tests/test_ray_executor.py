"""What the Ray executor does around Ray itself, without a cluster."""

from __future__ import annotations

import os

import pytest

from orchestrator.ray_executor import DRIVER_SETTINGS, _driver_settings


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
