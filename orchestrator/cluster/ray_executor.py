"""The only module that imports Ray: the cluster connection and the worker actors.

Each worker is a Ray actor that owns one worker process (see :mod:`orchestrator.worker.process`)
for the whole run. The actor is a thin relay: commands go down a pipe, events come back
from another. Keeping pytest in a child of the actor means a test that crashes its
interpreter (a segfault, ``os._exit``) takes down only that process, and the actor can
say exactly how it ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from orchestrator.cluster.ray_private import stop_monitor_first
from orchestrator.cluster.ray_start import (
    after_failure,
    before_start,
    not_running_message,
    recorded_address,
    resolve_auto,
    session_root,
)
from orchestrator.cluster.run_identity import Identity, alive, identity
from orchestrator.cluster.shipping import Shipment, is_loopback, portable_env
from orchestrator.config import POLL_SECONDS
from orchestrator.errors import ClusterError
from orchestrator.run.executor import ClusterInfo, PollResult, WorkerLost
from orchestrator.run.protocol import Command, InitMessage, Message
from orchestrator.scheduling.resources import format_memory
from orchestrator.worker.process import Spare, WorkerProcess

#: Accelerator variables Ray sets in an actor; they win over the controller's values.
RAY_ASSIGNED_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
#: Seconds to wait for a worker actor to be placed and to answer.
ACTOR_START_TIMEOUT = 120.0
#: Seconds to reach the address of an existing cluster before giving up.
CONNECT_TIMEOUT = 10.0
#: Size of the object store of the instance a run starts for itself.
LOCAL_OBJECT_STORE = 256 * 1024 * 1024


#: Namespace and names of the warm relays ``orchestrator up`` keeps (see WorkerActor.lease).
POOL_NAMESPACE = "orchestrator-pool"
POOL_NAME = "relay-{}"
#: Bumped whenever the relay's methods or the worker protocol change: a run does not lease
#: relays started by another version of this code.
POOL_VERSION = "2"
#: Seconds a relay waits to find out whether the run holding it is still alive.
LEASE_CHECK_TIMEOUT = 5.0
#: How often an idle-looking relay checks that the run holding it is alive.
LEASE_WATCH_SECONDS = 2.0


class WorkerActor:
    """Runs on a Ray worker: owns one worker process and relays its pipes.

    A run creates one per worker (``init`` given), or leases one of the warm, idle relays
    that ``orchestrator up`` keeps (created without ``init``): :meth:`lease`, then
    :meth:`start`, and :meth:`release` at the end instead of killing the actor. That saves
    Ray's start of a worker process (most of a second) on every run.
    """

    def __init__(
        self,
        init: InitMessage | None = None,
        cwd: str = "",
        env: dict[str, str] | None = None,
        python: str = "",
    ) -> None:
        self._proc: WorkerProcess | None = None
        self._holder: Identity | list[Any] | None = None
        #: A warm relay's worker process started ahead of the next run (Python up,
        #: pytest imported), which that run's worker adopts instead of starting one.
        self._spare: Spare | None = None
        self._lock = threading.Lock()
        if init is not None:
            self.start(init, cwd, env or {}, python)
        else:  # a warm relay: notice a run that died holding it
            threading.Thread(target=self._watch_holder, name="lease-watch", daemon=True).start()

    def start(self, init: InitMessage, cwd: str, env: dict[str, str], python: str) -> None:
        """Start the worker process in ``cwd`` with ``env``.

        A relative ``cwd`` means the project was shipped to this node (see
        :mod:`orchestrator.cluster.shipping`): it is taken inside the copy Ray unpacked here, which
        is this actor's working directory, and ``env`` only adds to this node's variables.
        """
        child_env: dict[str, str] = {}
        if not os.path.isabs(cwd):
            cwd = os.path.join(os.getcwd(), cwd)
            child_env.update(os.environ)
        child_env.update(env)
        child_env.update(init.get("env") or {})
        for name in RAY_ASSIGNED_VARS:
            if name in os.environ:
                child_env[name] = os.environ[name]
        if not os.path.exists(python):
            python = sys.executable
        self._stop_process(0.0)
        with self._lock:
            spare, self._spare = self._spare, None
        self._proc = WorkerProcess(init, cwd=cwd, env=child_env, python=python, spare=spare)

    def where(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()}"

    def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def exchange(self, commands: list[Command], timeout: float) -> list[bytes | Message]:
        proc = self._proc  # the lease watcher may stop it meanwhile, from its own thread
        if proc is None:
            return [{"t": "exit", "code": -1, "how": "no worker process", "log": ""}]
        proc.send(commands)
        return proc.events(timeout)

    def close(self) -> None:
        self._stop_process(5.0)

    def _stop_process(self, grace: float) -> None:
        if self._proc is not None:
            self._proc.close(grace=grace)
            self._proc = None

    def lease(self, holder: Identity | list[Any], version: str) -> bool:
        """Take this relay for the run ``holder`` names: its process (see
        :mod:`orchestrator.cluster.run_identity`), or, where ``/proc`` cannot tell, ``[ref]``, an
        object the run put (its owner's death says the run's).

        Refused while another run holds it, unless that run died: then its worker process
        is stopped and the relay is taken over.
        """
        if version != POOL_VERSION:
            return False
        with self._lock:
            if self._holder is not None and self._holder_alive(self._holder):
                return False
            self._stop_process(0.0)
            self._holder = holder
            return True

    def release(self, grace: float) -> None:
        """The run is done with this relay: stop its worker process, free the relay."""
        with self._lock:
            self._stop_process(grace)
            self._holder = None
            # Ready for the next run at once (it may start right away, as in CI or a
            # benchmark), not at the watcher's next look.
            if self._spare is None:
                self._spare = Spare()

    @staticmethod
    def _holder_alive(holder: Identity | list[Any]) -> bool:
        if isinstance(holder, dict):
            return alive(holder)
        import ray

        try:
            ray.get(holder[0], timeout=LEASE_CHECK_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            return True  # cannot tell: assume it is
        except ray.exceptions.RayError:
            return False  # its owner, the run, is gone
        return True

    def _watch_holder(self) -> None:
        """Stop the worker process of a run that died holding this relay, so that its
        tests do not go on using the machine until the next run leases the relay; and
        keep a spare worker process ready while the relay is free."""
        while True:
            if self._holder is None:
                with self._lock:
                    if self._spare is None and self._holder is None and self._proc is None:
                        self._spare = Spare()
            time.sleep(LEASE_WATCH_SECONDS)
            holder = self._holder
            if holder is None or self._holder_alive(holder):
                continue
            with self._lock:
                if self._holder is holder:
                    self._stop_process(0.0)
                    self._holder = None


def start_pool(count: int) -> list[Any]:
    """Start ``count`` idle relays for runs to lease (``orchestrator up``); returns them
    once they answer. They live as long as the calling process's connection to Ray."""
    import ray

    remote_cls: Any = ray.remote(WorkerActor)
    relays = [
        remote_cls.options(
            name=POOL_NAME.format(i), namespace=POOL_NAMESPACE, num_cpus=0, max_concurrency=1
        ).remote()
        for i in range(count)
    ]
    ray.get([relay.where.remote() for relay in relays], timeout=ACTOR_START_TIMEOUT)
    return relays


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address and where it came from, when nothing listens there.

    ``auto`` means the address ``ray start`` recorded: a record left behind by a cluster
    that is gone would have Ray retry for minutes.
    """
    record = None
    if address == "auto":
        named = os.environ.get("RAY_ADDRESS", "")
        if named not in ("", "auto"):  # Ray takes RAY_ADDRESS over "auto"
            _check_reachable(named)
            return
        found = recorded_address(os.environ)
        if found is None:
            return  # Ray looks for a running instance itself, and says when there is none
        address, record = found
    if "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        if record is not None:
            return  # not ours to judge: Ray says what is wrong with its own record
        raise ClusterError(
            f"--ray-address {address!r} is not HOST:PORT (for example 127.0.0.1:6379); "
            "use the address `ray start --head` printed"
        )
    try:
        with socket.create_connection(
            (host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT
        ) as sock:
            grpc = bool(os.environ.get("RAY_USE_TLS")) or _speaks_http2(sock)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ClusterError(not_running_message(address, why, os.environ, record)) from None
    if not grpc:
        raise ClusterError(
            f"{address} answers, but not as a Ray cluster (Ray's GCS speaks gRPC); "
            "check the port: `ray start --head` prints the address to use"
        )


#: HTTP/2's client connection preface followed by an empty SETTINGS frame.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _speaks_http2(sock: socket.socket) -> bool:
    """True when the server answers HTTP/2's preface with SETTINGS, as gRPC servers do.

    Catches a wrong port in seconds, where Ray itself would retry for minutes.
    """
    sock.settimeout(5.0)
    try:
        sock.sendall(_HTTP2_HELLO)
        head = sock.recv(9)
    except OSError:
        return False
    return len(head) >= 4 and head[3] == 0x04


def _token_available() -> bool:
    """True when Ray would find a cluster token (variable, named file, or the default file)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return os.path.isfile(path)


class RayExecutor:
    """Connects to (or starts) a Ray cluster and runs worker actors on it."""

    def __init__(self, address: str | None, shipment: Shipment | None = None) -> None:
        self.address = address
        #: The project's files travel to the nodes with the job's runtime environment.
        self.shipment = shipment if address else None
        self._ray: Any = None
        self._started_here = False
        #: This executor called ``ray.init`` (it did not find a connection made by others).
        self._connected_here = False
        self._actors: dict[str, Any] = {}
        self._outbox: dict[str, list[Command]] = {}
        self._outstanding: dict[Any, str] = {}
        self._busy: set[str] = set()
        #: Workers running in leased warm relays (released, not killed, at the end).
        self._leased: set[str] = set()
        self._lease_token: Any = None
        #: What each worker's actor asked Ray for, in Ray's names.
        self._asked: dict[str, dict[str, float]] = {}
        #: ``ray.shutdown`` running while the caller writes its reports.
        self._closing: threading.Thread | None = None

    # -- cluster ---------------------------------------------------------------------
    def connect(self, local_cpus: int) -> ClusterInfo:
        """Join the cluster at ``address``, or start a local one with ``local_cpus`` CPUs."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address:
            _check_reachable(self.address)
            # Ray sends its token only when told to; a cluster without token
            # authentication accepts a client that sends one.
            if "RAY_AUTH_MODE" not in os.environ and _token_available():
                os.environ["RAY_AUTH_MODE"] = "token"
            # Give up on an unresponsive cluster within seconds, not minutes.
            os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "15")
        if not self.address or is_loopback(resolve_auto(self.address, os.environ) or ""):
            # Ray otherwise swaps a loopback address for the machine's own IP, where a
            # loopback-only cluster does not listen; and an embedded cluster must stay on
            # loopback. Ray reads this when it is imported.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        self._ray = ray
        quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        if ray.is_initialized():
            # A connection the embedding program made: use it, leave it open.
            if self.shipment is not None:
                raise ClusterError(
                    "this program is already connected to Ray, so the project's files cannot "
                    "travel with the run's runtime environment: connect with "
                    f"runtime_env={{'working_dir': {str(self.shipment.root)!r}}} yourself, or "
                    "pass --ray-files shared when every node sees the project at this path"
                )
        elif self.address:
            if self.shipment is not None:
                quiet["runtime_env"] = self.shipment.runtime_env()
            try:
                with _driver_settings():
                    ray.init(address=self.address, **quiet)
            except ray.exceptions.RuntimeEnvSetupError as exc:
                raise ClusterError(
                    f"the project's files could not be shipped to the cluster at "
                    f"{self.address}: {_first_line(exc)}; leave out large files with "
                    "--ray-exclude, or pass --ray-files shared when every node sees the "
                    "project at the same path"
                ) from None
            except Exception as exc:
                hint = (
                    "; if the cluster uses token authentication, give its token in "
                    "RAY_AUTH_TOKEN or in the file named by RAY_AUTH_TOKEN_PATH"
                )
                raise ClusterError(
                    f"cannot connect to the Ray cluster at {self.address}: {_first_line(exc)}{hint}"
                ) from None
            self._connected_here = True
        else:
            # Ray runs its workers at nice 15; our test processes should compete with
            # nothing at a disadvantage, as they would under plain pytest.
            os.environ.setdefault("RAY_worker_niceness", "0")
            temp_dir = ray_temp_dir()
            if temp_dir is not None:
                quiet["_temp_dir"] = temp_dir
            with _driver_settings():
                _init_local(
                    ray,
                    num_cpus=local_cpus,
                    include_dashboard=False,
                    object_store_memory=LOCAL_OBJECT_STORE,
                    **quiet,
                )
            self._started_here = self._connected_here = True
        cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
        if self._started_here:
            where = f"a local Ray instance ({cpus} CPUs)"
        else:
            alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
            nodes = len(alive)
            where = f"the Ray cluster at {self.address or 'auto'} ({nodes} node(s), {cpus} CPUs)"
        return ClusterInfo(description=where, cpus=cpus)

    # -- workers ---------------------------------------------------------------------
    @property
    def leased(self) -> int:
        """How many workers run in warm relays leased from ``orchestrator up``."""
        return len(self._leased)

    def holds_cpu(self, worker: str) -> bool:
        """Does Ray count a CPU of some node as taken by this worker? Not for the embedded
        instance, which counts none, nor for a leased warm relay."""
        return not self._started_here and worker not in self._leased

    def launch(self, inits: Sequence[InitMessage], env: Mapping[str, str], cwd: str) -> None:
        """Ask Ray for the workers' actors and return at once: each starts its worker
        process (which collects the suite) as soon as Ray places it. Ordinary workers
        take warm relays of ``orchestrator up`` first, where there are free ones."""
        ray = self._ray
        remote_cls = ray.remote(WorkerActor)
        inits = list(inits)
        python = sys.executable
        if self.shipment is not None:
            # Paths and variables that mean something on the nodes, in their copy.
            cwd, env, python = self.shipment.cwd, portable_env(env), ""
            inits = [{**i, "args": self.shipment.portable_args(i.get("args", []))} for i in inits]
        ordinary = [init for init in inits if not init.get("resources")]
        for init, relay in zip(ordinary, self._lease_relays(len(ordinary)), strict=False):
            relay.start.remote(init, cwd, dict(env), python)
            self._actors[init["worker"]] = relay
            self._outbox[init["worker"]] = []
            self._leased.add(init["worker"])
            inits.remove(init)
        for init in inits:
            options = _actor_resources(init, count_cpus=not self._started_here)
            self._asked[init["worker"]] = _ray_names(options)
            actor = remote_cls.options(
                max_concurrency=1, scheduling_strategy="SPREAD", **options
            ).remote(init, cwd, dict(env), python)
            self._actors[init["worker"]] = actor
            self._outbox[init["worker"]] = []

    def _lease_relays(self, wanted: int) -> list[Any]:
        """Up to ``wanted`` free warm relays of the cluster, leased to this run."""
        if wanted == 0 or self._started_here or self.shipment is not None:
            return []  # relays run in the daemon's job, without the shipped files
        ray = self._ray
        if self._lease_token is None:
            # The run's process, which the relays can check without holding anything of
            # this run's; an object lent to them would hold ray.shutdown() a quarter of a
            # second at the end of the run. Where /proc cannot tell, that object.
            self._lease_token = identity() or [ray.put(os.getpid())]
        leased: list[Any] = []
        index = 0
        while len(leased) < wanted:
            need = wanted - len(leased)
            candidates: list[Any] = []
            while len(candidates) < need:
                try:
                    name = POOL_NAME.format(index)
                    candidates.append(ray.get_actor(name, namespace=POOL_NAMESPACE))
                except ValueError:  # no such relay: the pool ends here (or there is none)
                    break
                index += 1
            if not candidates:
                break
            answers = ray.get(
                [c.lease.remote(self._lease_token, POOL_VERSION) for c in candidates],
                timeout=LEASE_CHECK_TIMEOUT * 2,
            )
            leased.extend(c for c, ok in zip(candidates, answers, strict=True) if ok)
            if len(candidates) < need:
                break  # the pool ended
        return leased

    def wait_started(self, workers: Sequence[str]) -> None:
        """Wait until Ray has placed these workers' actors (a clear error if it cannot)."""
        ray = self._ray
        pings = {self._actors[wid].where.remote(): wid for wid in workers if wid in self._actors}
        deadline = time.monotonic() + ACTOR_START_TIMEOUT
        waiting = list(pings)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
            for ref in ready:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise ClusterError(
                        f"worker {pings[ref]} failed to start: {_first_line(exc)}"
                    ) from None
            if waiting and time.monotonic() > deadline:
                late = [pings[ref] for ref in waiting]
                raise ClusterError(
                    f"{len(late)} worker(s) were not placed within {ACTOR_START_TIMEOUT:.0f} s: "
                    f"{self._describe_unplaced(late)}; the cluster may lack free CPUs (or the "
                    "GPUs and resources your tests ask for): ask for fewer workers with "
                    "--ray-workers"
                )

    def _describe_unplaced(self, workers: Sequence[str]) -> str:
        """Which workers wait, what each asked for, and what the cluster has free."""
        asked = ", ".join(
            f"{w} ({_format_resources(self._asked[w]) or 'nothing'})" if w in self._asked else w
            for w in workers
        )
        try:
            free = self._ray.available_resources()
            total = self._ray.cluster_resources()
        except Exception:  # only a message: what it can tell
            return asked
        names = sorted({name for w in workers for name in self._asked.get(w, {})} | {"CPU"})
        shown = ", ".join(
            f"{name} {_format_amount(name, free.get(name, 0.0))} of "
            f"{_format_amount(name, total.get(name, 0.0))}"
            for name in names
        )
        return f"{asked}; free now: {shown}"

    def node_resources(self) -> dict[str, dict[str, float]]:
        """Total resources of each live node, in Ray's names (CPU, GPU, memory, ...), by
        the node's id."""
        nodes = [node for node in self._ray.nodes() if node.get("Alive")]
        return {
            str(node.get("NodeID")): {
                name: float(amount)
                for name, amount in node.get("Resources", {}).items()
                if not name.startswith("node:")
            }
            for node in nodes
        }

    def worker_nodes(self, workers: Sequence[str]) -> dict[str, str | None]:
        """The node each placed worker's actor holds a CPU on (None for one that holds
        none, or that does not answer within a few seconds)."""
        ray = self._ray
        asked = {
            w: self._actors[w].node.remote()
            for w in workers
            if w in self._actors and self.holds_cpu(w)
        }
        where: dict[str, str | None] = dict.fromkeys(workers)
        for worker, ref in asked.items():
            with contextlib.suppress(Exception):
                where[worker] = str(ray.get(ref, timeout=LEASE_CHECK_TIMEOUT))
        return where

    def send(self, worker: str, commands: Sequence[Command]) -> None:
        self._outbox.setdefault(worker, []).extend(commands)

    def dispatch(self) -> None:
        for worker, actor in self._actors.items():
            if worker not in self._busy:
                commands, self._outbox[worker] = self._outbox[worker], []
                ref = actor.exchange.remote(commands, POLL_SECONDS)
                self._outstanding[ref] = worker
                self._busy.add(worker)

    def poll(self, timeout: float) -> list[PollResult]:
        ray = self._ray
        self.dispatch()
        if not self._outstanding:
            return []
        refs = list(self._outstanding)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        results: list[PollResult] = []
        for ref in ready:
            worker = self._outstanding.pop(ref)
            self._busy.discard(worker)
            try:
                results.append((worker, ray.get(ref)))
            except ray.exceptions.RayError as exc:
                self._actors.pop(worker, None)
                results.append((worker, WorkerLost(_first_line(exc))))
        return results

    def close_worker(self, worker: str, graceful: bool = True) -> None:
        for ref, owner in list(self._outstanding.items()):
            if owner == worker:
                del self._outstanding[ref]
        self._busy.discard(worker)
        actor = self._actors.pop(worker, None)
        if actor is None:
            return
        if worker in self._leased:
            self._leased.discard(worker)
            with contextlib.suppress(Exception):
                self._ray.get(actor.release.remote(5.0 if graceful else 0.0), timeout=15)
            return
        if graceful:
            with contextlib.suppress(Exception):
                self._ray.get(actor.close.remote(), timeout=15)
        self._ray.kill(actor)

    def shutdown(self, graceful: bool = True, *, wait: bool = True) -> None:
        """Stop the workers (letting their sessions finish when ``graceful``) and the
        cluster if we started it. Safe to call twice.

        With ``wait=False`` the workers are still stopped before it returns, but Ray's
        own disconnection (a quarter of a second or more) goes on in a thread while the
        caller writes its reports; :meth:`wait_closed` waits for it.
        """
        if self._ray is None:
            return
        leased = [actor for w, actor in self._actors.items() if w in self._leased]
        owned = [actor for w, actor in self._actors.items() if w not in self._leased]
        ending = [actor.release.remote(5.0 if graceful else 0.0) for actor in leased]
        if graceful:
            ending += [actor.close.remote() for actor in owned]
        if ending:
            self._ray.wait(ending, num_returns=len(ending), timeout=15)
        for actor in owned:
            self._ray.kill(actor)
        self._actors.clear()
        self._leased.clear()
        self._outstanding.clear()
        if self._connected_here:
            if self._started_here:
                stop_monitor_first(self._ray)
            # Also from a cluster we only joined: disconnecting now costs less than Ray's
            # own clean-up when the interpreter exits (which first sleeps half a second).
            if wait:
                self._ray.shutdown()
            else:
                self._closing = threading.Thread(
                    target=self._ray.shutdown, name="orchestrator-ray-shutdown"
                )
                self._closing.start()
            self._connected_here = self._started_here = False
        self._ray = None

    def wait_closed(self) -> None:
        """Return once a disconnection started by ``shutdown(wait=False)`` is over."""
        if self._closing is not None:
            self._closing.join()
            self._closing = None


#: Ray settings for this process's own connection (and for the instance a run starts for
#: itself, whose processes start meanwhile), unless the user set them. The driver's
#: buffer of task events (what Ray's dashboard lists as tasks) holds ``ray.shutdown`` for
#: a quarter of a second or more while it flushes; a run's driver submits only its
#: workers' polls, which nobody looks up there.
#: The longest directory a Ray instance's session files fit under: its sockets
#: (``session_<date>_<time>_<pid>/sockets/plasma_store``, 61 characters and more) must
#: stay within the 107 bytes of a Unix socket's path.
RAY_TEMP_MAX = 40


def ray_temp_dir(tempdir: str | None = None, uid: int | None = None) -> str | None:
    """Where a Ray instance this program starts keeps its session files: None (Ray's
    default, ``ray`` under the temporary directory) while that path is short enough for
    Ray's sockets, else a directory of this user's own under ``/tmp``. Only Ray's files
    move: the tests still see the user's ``TMPDIR``."""
    default = os.path.join(tempdir, "ray") if tempdir else session_root(None, os.environ)
    if len(default) <= RAY_TEMP_MAX:
        return None
    return f"/tmp/ray-{os.getuid() if uid is None else uid}"


DRIVER_SETTINGS = {"RAY_task_events_report_interval_ms": "0"}


@contextlib.contextmanager
def _driver_settings() -> Iterator[None]:
    """Apply :data:`DRIVER_SETTINGS` while Ray reads them (``ray.init``), and only then:
    the test processes inherit this environment, and their own Ray use keeps Ray's
    defaults."""
    added = {k: v for k, v in DRIVER_SETTINGS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _init_local(ray: Any, **options: Any) -> None:
    """``ray.init`` of a new local instance, never the cluster `ray start` may have recorded
    (Ray would join that one, and refuse the CPU count).

    A fault Ray would report late (after 30 s or more) or as a traceback (a full or
    read-only directory, a taken port) is found first; any failure of Ray's start ends as
    one :class:`ClusterError` naming its cause and what to do (see
    :mod:`orchestrator.cluster.ray_start`).
    """
    temp_dir = options.get("_temp_dir")
    problem = before_start(temp_dir, os.environ, options.get("object_store_memory"))
    if problem is not None:
        raise ClusterError(problem)
    try:
        ray.init(address="local", **options)
    except Exception as exc:
        raise ClusterError(after_failure(exc, temp_dir, os.environ)) from None


def start_local_head(
    cpus: int, gpus: int | None, resources: Mapping[str, float]
) -> tuple[str, Any, int]:
    """Start a Ray head on loopback (no dashboard) owned by this process.

    Returns its address, the function that stops it, and its GPU count (``gpus=None``
    lets Ray detect them).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    options: dict[str, Any] = {"num_cpus": cpus, "resources": dict(resources)}
    if gpus is not None:
        options["num_gpus"] = gpus
    temp_dir = ray_temp_dir()
    if temp_dir is not None:
        options["_temp_dir"] = temp_dir
    _init_local(
        ray,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        **options,
    )
    address = ray.get_runtime_context().gcs_address
    detected = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]

    def stop() -> None:
        stop_monitor_first(ray)
        ray.shutdown()

    return address, stop, detected


def _actor_resources(init: InitMessage, *, count_cpus: bool = True) -> dict[str, Any]:
    """Ray actor options for a worker's resource shape (one CPU when it has none).

    Without ``count_cpus`` (the embedded instance, which only this run uses) Ray is not
    asked for CPUs: the run decides how many workers share the machine, and a worker
    shaped for more CPUs than the machine has still starts, as it would under pytest.
    """
    need = dict(init.get("resources") or {"CPU": 1.0})
    cpus = need.pop("CPU", 0.0)
    options: dict[str, Any] = {
        "num_cpus": cpus if count_cpus else 0,
        "num_gpus": need.pop("GPU", 0.0),
    }
    memory = need.pop("memory", 0.0)
    if memory:
        options["memory"] = memory
    if need:
        options["resources"] = need
    return options


def _ray_names(options: Mapping[str, Any]) -> dict[str, float]:
    """Actor options (see :func:`_actor_resources`) as resources in Ray's names."""
    asked = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0)}
    asked["memory"] = options.get("memory", 0)
    asked.update(options.get("resources") or {})
    return {name: float(amount) for name, amount in asked.items() if amount}


def _format_amount(name: str, amount: float) -> str:
    return format_memory(amount) if name == "memory" else f"{amount:g}"


def _format_resources(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {_format_amount(name, v)}" for name, v in resources.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
