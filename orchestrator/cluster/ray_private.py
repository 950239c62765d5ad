"""Every use of Ray's private internals (``ray._private``), each behind one small function.

Ray promises nothing about ``ray._private``. Keeping each use here, with a test per use
against the installed Ray (``tests/test_ray_private.py``) and a Ray range capped below the
next major version (``pyproject.toml``), makes an upgrade that moves one fail in CI rather
than in a user's run. Each function takes the ``ray`` module as an argument (this module
imports no Ray of its own) and, where the internal is missing or holds something else,
returns what leaves Ray's public behaviour in charge: a run never fails because of them.
"""

from __future__ import annotations

import contextlib
from typing import Any


def global_node(ray: Any) -> Any | None:
    """The node of the Ray instance this process started or joined with ``ray.init``
    (``ray._private.worker._global_node``); None before ``ray.init``, after
    ``ray.shutdown()``, or where Ray keeps it elsewhere (then nothing here acts on it)."""
    try:
        return ray._private.worker._global_node
    except AttributeError:
        return None


def monitor_process_type(ray: Any) -> str | None:
    """The key of the autoscaler monitor among a node's processes
    (``ray._private.ray_constants.PROCESS_TYPE_MONITOR``); None where the constant is
    missing (then no process is taken for the monitor)."""
    try:
        value = ray._private.ray_constants.PROCESS_TYPE_MONITOR
    except AttributeError:
        return None
    return value if isinstance(value, str) else None


def monitor_processes(ray: Any) -> list[Any]:
    """The processes (``subprocess.Popen``) of the autoscaler monitor that this process's
    Ray instance started, still running: ``node.all_processes[PROCESS_TYPE_MONITOR]``, a
    list of ``ProcessInfo`` with a ``process``. Empty where there is none (a joined
    cluster starts none here) or where Ray keeps them elsewhere."""
    node, key = global_node(ray), monitor_process_type(ray)
    if node is None or key is None:
        return []
    try:
        infos = list(node.all_processes.get(key, []))
    except Exception:  # a node shaped otherwise: Ray's shutdown stops its own processes
        return []
    out = []
    for info in infos:
        process = getattr(info, "process", None)
        with contextlib.suppress(Exception):
            if process is not None and process.poll() is None:
                out.append(process)
    return out


def stop_monitor_first(ray: Any) -> bool:
    """Stop the autoscaler monitor of the Ray instance this process started, ahead of
    ``ray.shutdown()``; True when there was one to stop.

    Ray's shutdown stops the instance's GCS first and its monitor after it: the monitor's
    handler of SIGTERM then tries to report to the GCS that is gone, and Ray waits a full
    second before it kills the monitor, at the end of every run that started its own
    instance. Killing it first, as Ray does after that second, takes the second off.
    Where :func:`monitor_processes` finds none, Ray's own shutdown stops the monitor as
    before.
    """
    stopped = False
    for process in monitor_processes(ray):
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(timeout=5)
            stopped = True
    return stopped


__all__ = [
    "global_node",
    "monitor_process_type",
    "monitor_processes",
    "stop_monitor_first",
]
