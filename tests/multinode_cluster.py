"""A two-node Ray cluster on this machine, for the multi-node tests.

Run as a script: starts a head (1 CPU) and a second node (1 CPU, 1 GPU, resource
``second``) with token authentication, prints the address, then removes the second node
(as if its machine died) when the file ``<control>/kill`` appears, and stops when
``<control>/stop`` appears or its standard input closes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path


def main(control: Path) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "resources": {"head": 1}},
    )
    second = cluster.add_node(num_cpus=1, num_gpus=1, resources={"second": 1})
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    try:
        while not stop.is_set() and not (control / "stop").exists():
            if (control / "kill").exists():
                (control / "kill").unlink()
                cluster.remove_node(second, allow_graceful=False)
                print("second node removed", flush=True)
            time.sleep(0.1)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
