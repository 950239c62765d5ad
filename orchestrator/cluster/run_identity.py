"""Who holds a warm relay, and whether that process still lives (see WorkerActor.lease).

A run that leases relays of ``orchestrator up`` names itself by its process: id, start time
and PID namespace. The relays run on the same machine (the instance listens on loopback
only), so a relay can tell from ``/proc`` whether the run's driver is gone, and free itself,
without holding anything of the run's through Ray: an object lent to another job's actor
holds the driver's ``ray.shutdown()`` for a quarter of a second at the end of every run.
"""

from __future__ import annotations

import os
from typing import Any

#: What a run sends to name itself.
Identity = dict[str, Any]


def _start_ticks(pid: int | str) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (None: no such process, or
    no ``/proc`` here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after its last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def identity() -> Identity | None:
    """This process, as a relay can check it; None where ``/proc`` cannot tell."""
    started = _start_ticks("self")
    if started is None:
        return None
    return {"pid": os.getpid(), "started": started, "pidns": _pid_namespace()}


def alive(holder: Identity) -> bool:
    """Is the process ``holder`` names still running? True when this process cannot tell
    (another PID namespace, no ``/proc``): a relay is never taken from a live run."""
    if _start_ticks("self") is None or holder.get("pidns") != _pid_namespace():
        return True
    return _start_ticks(int(holder["pid"])) == holder.get("started")
