"""A Ray cluster kept running across a benchmark run, as ``orchestrator up`` keeps one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from types import TracebackType

# What the `orchestrator up` daemon does: a loopback head and one warm relay per CPU.
_CLUSTER = """
import sys
from orchestrator.cluster.ray_executor import start_local_head, start_pool
cpus = int(sys.argv[1])
address, shutdown, _ = start_local_head(cpus, None, {})
relays = start_pool(cpus)
print(address, flush=True)
sys.stdin.read()
shutdown()
"""


#: Seconds a cluster is left to settle once it answers: Ray's processes keep a core busy
#: for about a second after their start, then take 1-2% of this machine's two cores.
SETTLE_SECONDS = 2.0


class WarmCluster:
    """A Ray cluster kept running for the duration of a benchmark, like `orchestrator up`.

    Ready, and settled, when the constructor returns; ``close`` (or leaving the ``with``
    block) stops it.
    """

    def __init__(self, cpus: int, env: Mapping[str, str] | None = None) -> None:
        full_env = dict(env if env is not None else os.environ)
        full_env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLUSTER, str(cpus)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            self.close()
            raise RuntimeError(f"the Ray cluster did not start (exit code {self.proc.returncode})")
        time.sleep(SETTLE_SECONDS)

    def close(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> WarmCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
