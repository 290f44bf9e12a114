"""Helpers for tests of programs that use miniray (like trio.testing)."""
from __future__ import annotations

import re
import time
from typing import Callable


def wait_for_condition(condition_predictor: Callable[[], bool], timeout: float = 10.0,
                       retry_interval_ms: float = 20, raise_exceptions: bool = False,
                       **kwargs) -> None:
    """Poll ``condition_predictor(**kwargs)`` until it is true; raise after
    ``timeout`` (Ray's test helper, with its argument names).

    An exception from the predicate counts as "not yet" (and is reported on
    timeout), unless ``raise_exceptions``, which lets it through at once.
    """
    condition = condition_predictor
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if condition(**kwargs):
                return
        except Exception as exc:       # noqa: BLE001 - retried until the deadline
            if raise_exceptions:
                raise
            last_error = exc
        time.sleep(retry_interval_ms / 1000)
    message = f"condition not met within {timeout}s"
    if last_error is not None:
        message += f" (last error: {last_error!r})"
    raise RuntimeError(message)


class _Signal:
    """An async actor tasks can wait on until the test sends the signal."""

    def __init__(self):
        import asyncio
        self._event = asyncio.Event()
        self._waiters = 0

    async def send(self, clear: bool = False) -> None:
        self._event.set()
        if clear:
            self._event.clear()

    async def wait(self, should_wait: bool = True) -> None:
        if should_wait:
            self._waiters += 1
            try:
                await self._event.wait()
            finally:
                self._waiters -= 1

    async def cur_num_waiters(self) -> int:
        return self._waiters


def _remote_signal():
    import miniray
    return miniray.remote(num_cpus=0)(_Signal)


# As in Ray's test utilities: ``signal = SignalActor.remote()``; tasks call
# ``ray.get(signal.wait.remote())`` and block until ``signal.send.remote()``.
# It takes no CPU, so it never competes with the tasks it coordinates.
SignalActor = _remote_signal()


class _Semaphore:
    """An async actor holding an ``asyncio.Semaphore`` that tasks share."""

    def __init__(self, value: int = 1):
        import asyncio
        self._semaphore = asyncio.Semaphore(value)

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    async def release(self) -> None:
        self._semaphore.release()

    async def locked(self) -> bool:
        return self._semaphore.locked()


def _remote_semaphore():
    import miniray
    return miniray.remote(num_cpus=0)(_Semaphore)


# As in Ray's test utilities: ``sema = Semaphore.remote(value=2)``; at most
# ``value`` tasks at a time get past ``ray.get(sema.acquire.remote())``
# until they call ``sema.release.remote()``. It takes no CPU either.
Semaphore = _remote_semaphore()


def gcs_server_process(address: str | None = None):
    """The psutil.Process of the GCS server of the cluster at ``address``
    (default: the one this driver is connected to), not its supervisor."""
    import psutil
    if address is None:
        from miniray import api
        address = api.ensure_initialized().gcs_address
    port = address.rsplit(":", 1)[1]
    servers = []
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if "miniray.gcs" in cmdline and port in cmdline and \
                cmdline[cmdline.index(port) - 1] == "--port":
            servers.append(proc)
    pids = {p.pid for p in servers}
    for proc in servers:
        if proc.info["ppid"] in pids:          # the supervisor's child
            return proc
    raise RuntimeError(f"no supervised GCS server found for {address}")


def kill_gcs(address: str | None = None) -> int:
    """SIGKILL the GCS server of a cluster (its supervisor restarts it);
    returns the killed pid."""
    proc = gcs_server_process(address)
    proc.kill()
    proc.wait(10)
    return proc.pid


class Cluster:
    """Several nodes on this machine, for tests and demos.

    The first node added is the head (GCS + raylet); later ones are raylets
    that join it. Nodes are child processes of this process and die with it.

        cluster = Cluster()
        cluster.add_node(num_cpus=2)
        worker = cluster.add_node(num_cpus=2, resources={"gpu_box": 1})
        miniray.init(address=cluster.address)
        cluster.kill_node(worker)
    """

    def __init__(self, initialize_head: bool = False, connect: bool = False,
                 head_node_args: dict | None = None):
        self.head_node = None
        self.worker_nodes: list = []
        self._connected = False
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    @property
    def address(self) -> str:
        if self.head_node is None:
            raise RuntimeError("the cluster has no head node yet")
        return self.head_node.gcs_address

    def add_node(self, *, num_cpus: int = 1, num_gpus: int = 0,
                 resources: dict | None = None,
                 object_store_memory: int = 256 * 1024 * 1024,
                 node_ip_address: str | None = None, wait: bool = True,
                 _system_config: dict | None = None, **_ignored):
        """Start a node; returns its NodeProcesses (``.node_id`` is a NodeID).
        ``_system_config``: Ray's knobs (common/system_config.py), for this
        node's processes."""
        from miniray import node as node_module
        from miniray.common import system_config
        args = dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                    object_store_memory=object_store_memory,
                    env=system_config.to_env(system_config.to_settings(_system_config)))
        if self.head_node is None:
            self.head_node = node_module.start_head(**args)
            # As Ray's Cluster: recorded like `miniray start`'s, so a driver
            # script's plain init() (or address="auto") joins this cluster.
            node_module.write_current_cluster(self.head_node.gcs_address)
            return self.head_node
        worker = node_module.start_worker_node(self.address,
                                               node_ip_address=node_ip_address, **args)
        self.worker_nodes.append(worker)
        return worker

    def remove_node(self, node, allow_graceful: bool = True) -> None:
        """Stop a node (SIGTERM, or SIGKILL without grace)."""
        if node is self.head_node:
            raise ValueError("remove worker nodes only; shutdown() stops the head")
        if allow_graceful:
            node.stop()
        else:
            self._kill(node)
        self.worker_nodes.remove(node)

    def kill_node(self, node) -> None:
        """Kill a worker node's raylet with SIGKILL, as a machine failure would."""
        self.remove_node(node, allow_graceful=False)

    @staticmethod
    def _kill(node) -> None:
        from miniray.node import remove_session_files
        for proc in node.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        remove_session_files(node.session_dir)

    def kill_gcs(self) -> int:
        """SIGKILL the head's GCS server; its supervisor restarts it and
        the cluster reconnects. Returns the killed pid."""
        return kill_gcs(self.address)

    def list_all_nodes(self) -> list:
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Wait until the GCS sees exactly the nodes this Cluster runs as alive."""
        from miniray.node import get_nodes
        expected = {bytes(n.node_id) for n in self.list_all_nodes()}

        def settled():
            alive = {bytes(n.node_id) for n in get_nodes(self.address) if n.alive}
            return alive == expected

        wait_for_condition(settled, timeout=timeout)

    def connect(self, namespace: str | None = None, **init_kwargs):
        """``miniray.init`` this process as a driver of the cluster
        (``init_kwargs``: runtime_env, job_config, ...)."""
        import miniray
        context = miniray.init(address=self.address, namespace=namespace, **init_kwargs)
        self._connected = True
        return context

    def shutdown(self) -> None:
        import miniray
        from miniray import node as node_module
        if self._connected:
            miniray.shutdown()
            self._connected = False
        for node in list(self.worker_nodes):
            node.stop()
        self.worker_nodes.clear()
        if self.head_node is not None:
            if node_module.read_current_cluster() == self.head_node.gcs_address:
                node_module.forget_current_cluster()
            self.head_node.stop()
            self.head_node = None


class TerminalScreen:
    """What a terminal shows after some output: the ANSI subset the driver
    draws progress bars with (CR, LF, cursor up/down, erase to the end of
    the line/screen), on a screen as tall as needed (nothing scrolls off).
    ``lines`` are the screen's lines, top first."""

    _TOKEN = re.compile(r"\x1b\[(\d*)([ABJK])|\r\n|\r|\n|[^\x1b\r\n]+|\x1b")

    def __init__(self):
        self.lines = [""]
        self.row = 0
        self.col = 0

    def feed(self, text: str) -> TerminalScreen:
        for match in self._TOKEN.finditer(text):
            token, command = match.group(0), match.group(2)
            if command:
                count = int(match.group(1) or 1)
                if command == "A":
                    self.row = max(0, self.row - count)
                elif command == "B":
                    self._move_to(self.row + count)
                elif command == "K":
                    self.lines[self.row] = self.lines[self.row][:self.col]
                else:                                  # J: erase to the screen's end
                    self.lines[self.row] = self.lines[self.row][:self.col]
                    del self.lines[self.row + 1:]
            elif token == "\r":
                self.col = 0
            elif token in ("\n", "\r\n"):         # a tty's output turns \n into \r\n
                self._move_to(self.row + 1)
                self.col = 0
            elif token != "\x1b":
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[:self.col] + token + line[self.col + len(token):]
                self.col += len(token)
        return self

    def _move_to(self, row: int) -> None:
        self.row = row
        while len(self.lines) <= row:
            self.lines.append("")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
