"""Jobs, the function table and the internal KV: in memory, and written
to the GCS's durable storage (gcs/storage.py) when one is given, from
which ``load`` rebuilds them after a restart."""
from __future__ import annotations

from miniray.common.ids import FunctionID, JobID
from miniray.common.validation import MAX_KV_TOTAL_BYTES, InvalidArgument
from miniray.protocol import gcs_pb2


class JobTable:
    def __init__(self, storage=None):
        self._next = 1
        self._configs: dict[JobID, gcs_pb2.JobConfig] = {}
        self._running: set[JobID] = set()
        self.driver_pids: dict[JobID, int] = {}
        self.drivers: dict[JobID, object] = {}       # job -> driver Address
        self._by_driver: dict[bytes, JobID] = {}     # driver worker id -> its job
        self._storage = storage

    def _save(self, job_id: JobID) -> None:
        if self._storage is None:
            return
        row = gcs_pb2.JobTableRow(config=self._configs[job_id],
                                  running=job_id in self._running,
                                  driver_pid=self.driver_pids.get(job_id, 0),
                                  driver=self.drivers.get(job_id))
        self._storage.put("jobs", job_id, row.SerializeToString())

    def load(self) -> None:
        for key, value in self._storage.load("jobs").items():
            row = gcs_pb2.JobTableRow.FromString(value)
            job_id = JobID(key)
            self._configs[job_id] = row.config
            if row.running:
                self._running.add(job_id)
            self.driver_pids[job_id] = row.driver_pid
            if row.HasField("driver"):
                self.drivers[job_id] = row.driver
                self._by_driver[row.driver.worker_id] = job_id
            self._next = max(self._next, job_id.to_int() + 1)

    def add(self, config: gcs_pb2.JobConfig, driver_pid: int, driver=None) -> JobID:
        # A driver that retries AddJob across a GCS restart gets its job back.
        if driver is not None and driver.worker_id in self._by_driver:
            return self._by_driver[driver.worker_id]
        job_id = JobID.from_int(self._next)
        self._next += 1
        stored = gcs_pb2.JobConfig()
        stored.CopyFrom(config)
        if not stored.namespace:          # each job gets an anonymous namespace
            stored.namespace = f"anonymous-{job_id.hex()}"
        self._configs[job_id] = stored
        self._running.add(job_id)
        self.driver_pids[job_id] = driver_pid
        if driver is not None:
            self.drivers[job_id] = driver
            if driver.worker_id:
                self._by_driver[driver.worker_id] = job_id
        self._save(job_id)
        return job_id

    def finish(self, job_id: JobID) -> None:
        if job_id in self._running:
            self._running.discard(job_id)
            self._save(job_id)

    def config(self, job_id: JobID) -> gcs_pb2.JobConfig | None:
        return self._configs.get(job_id)

    def num_running(self) -> int:
        return len(self._running)

    def all_jobs(self) -> list[gcs_pb2.JobInfo]:
        return [gcs_pb2.JobInfo(job_id=job_id, namespace=config.namespace,
                                is_dead=job_id not in self._running,
                                driver_pid=self.driver_pids.get(job_id, 0),
                                working_dir=config.working_dir)
                for job_id, config in self._configs.items()]


class FunctionTable:
    def __init__(self, storage=None):
        self._functions: dict[FunctionID, tuple[bytes, str]] = {}
        self._storage = storage

    def load(self) -> None:
        for key, value in self._storage.load("functions").items():
            row = gcs_pb2.FunctionTableRow.FromString(value)
            self._functions[FunctionID(key)] = (row.pickled, row.name)

    def export(self, function_id: FunctionID, pickled: bytes, name: str) -> None:
        if function_id in self._functions:
            return
        self._functions[function_id] = (pickled, name)
        if self._storage is not None:
            self._storage.put("functions", function_id, gcs_pb2.FunctionTableRow(
                pickled=pickled, name=name).SerializeToString())

    def get(self, function_id: FunctionID) -> tuple[bytes, str] | None:
        return self._functions.get(function_id)


class InternalKV:
    """Namespaced bytes -> bytes, at most ``max_bytes`` of keys and values
    in all (entries are checked one by one in common/validation.py)."""

    def __init__(self, max_bytes: int = MAX_KV_TOTAL_BYTES, storage=None):
        self._data: dict[tuple[str, bytes], bytes] = {}
        self.max_bytes = max_bytes
        self.bytes = 0
        self._storage = storage

    @staticmethod
    def _row_key(namespace: str, key: bytes) -> bytes:
        ns = namespace.encode()
        return len(ns).to_bytes(4, "big") + ns + key

    def load(self) -> None:
        for row_key, value in self._storage.load("kv").items():
            size = int.from_bytes(row_key[:4], "big")
            namespace, key = row_key[4:4 + size].decode(), row_key[4 + size:]
            self._data[(namespace, key)] = value
            self.bytes += len(namespace) + len(key) + len(value)

    def put(self, namespace: str, key: bytes, value: bytes, overwrite: bool) -> bool:
        k = (namespace, key)
        old = self._data.get(k)
        if old is not None and not overwrite:
            return False
        size = self.bytes + len(value) - (len(old) if old is not None
                                          else -len(key) - len(namespace))
        if size > self.max_bytes:
            raise InvalidArgument(f"the internal KV is full: it holds at most "
                                  f"{self.max_bytes} bytes")
        self.bytes = size
        self._data[k] = value
        if self._storage is not None:
            self._storage.put("kv", self._row_key(namespace, key), value)
        return old is None

    def get(self, namespace: str, key: bytes) -> bytes | None:
        return self._data.get((namespace, key))

    def delete(self, namespace: str, key: bytes, by_prefix: bool = False) -> int:
        doomed = [k for k in self._data if k[0] == namespace and k[1].startswith(key)] \
            if by_prefix else [(namespace, key)] if (namespace, key) in self._data else []
        for k in doomed:
            self.bytes -= len(self._data.pop(k)) + len(k[0]) + len(k[1])
            if self._storage is not None:
                self._storage.delete("kv", self._row_key(*k))
        return len(doomed)

    def keys(self, namespace: str, prefix: bytes) -> list[bytes]:
        return [k[1] for k in self._data if k[0] == namespace and k[1].startswith(prefix)]
