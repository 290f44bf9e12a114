"""The state API's records (Ray's field names) and filters. Pure: no I/O.

Each record is a dataclass that also reads like a dict (``task["state"]``),
as Ray's do. ``filters`` are Ray's ``[(key, "=" | "!=", value), ...]``, all
of which must hold: ``key`` must be a column of the record (one holding a
string, number or flag), string values match case-insensitively (``state=
running``), and a string compared with a number or flag column is
converted first (``pid=1234``, ``is_alive=true``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

__all__ = ["ActorState", "NodeState", "PlacementGroupState", "JobState", "TaskState",
           "WorkerState", "ObjectState", "RayStateApiException", "DEFAULT_LIMIT",
           "DEFAULT_TIMEOUT", "DEFAULT_LOG_LIMIT", "PREDICATES", "check_filters",
           "filterable_columns", "matches", "select", "parse_filter"]

DEFAULT_LIMIT = 100
DEFAULT_TIMEOUT = 30
DEFAULT_LOG_LIMIT = 1000
PREDICATES = ("=", "!=")


class RayStateApiException(Exception):
    """The state API could not get what was asked (a node did not answer,
    no such log file, ...), under Ray's name."""


class _Record:
    def __getitem__(self, key):          # Ray's records also read like dicts
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)

    def to_dict(self) -> dict:
        return asdict(self)

    asdict = to_dict


@dataclass
class ActorState(_Record):
    actor_id: str
    class_name: str
    state: str
    job_id: str
    name: str
    namespace: str
    pid: int
    node_id: str | None
    num_restarts: int
    is_detached: bool
    ray_namespace: str = ""     # Ray's name for ``namespace`` (both are kept)


@dataclass
class NodeState(_Record):
    node_id: str
    node_ip: str
    is_head_node: bool
    state: str
    node_name: str
    resources_total: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    start_time_ms: int | None = None
    end_time_ms: int | None = None


@dataclass
class PlacementGroupState(_Record):
    placement_group_id: str
    name: str
    state: str
    strategy: str
    bundles: list = field(default_factory=list)
    is_detached: bool = False
    creator_job_id: str | None = None


@dataclass
class JobState(_Record):
    job_id: str
    status: str
    namespace: str
    driver_pid: int
    type: str = "DRIVER"
    working_dir: str = ""


@dataclass
class TaskState(_Record):
    task_id: str
    attempt_number: int
    name: str
    state: str
    job_id: str
    actor_id: str | None
    type: str
    func_or_class_name: str
    parent_task_id: str | None
    node_id: str | None
    worker_id: str | None
    worker_pid: int | None
    error_type: str | None
    error_message: str | None = None
    required_resources: dict = field(default_factory=dict)
    placement_group_id: str | None = None
    language: str = "PYTHON"
    creation_time_ms: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    events: list = field(default_factory=list)      # [{"state", "created_ms"}]


@dataclass
class WorkerState(_Record):
    """A worker or driver process, as its node's raylet knows it (the last
    exited ones too)."""
    worker_id: str
    is_alive: bool
    worker_type: str                 # WORKER or DRIVER
    exit_type: str | None
    node_id: str
    ip: str
    pid: int
    job_id: str | None = None        # None: not bound to a job yet
    actor_id: str | None = None      # the actor it hosts, if any
    exit_detail: str | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None


@dataclass
class ObjectState(_Record):
    """One process's reference to an object (see list_objects): Ray's
    fields first. ``pid``, ``ip``, ``type`` and ``node_id`` are those of
    the process holding the reference (the owner or a borrower)."""
    object_id: str
    object_size: int                 # bytes; -1 if this process does not know it
    task_status: str                 # of the task that creates it; NIL if not known
    attempt_number: int              # of that task (0: first try, or not a return)
    reference_type: str              # LOCAL_REFERENCE, PINNED_IN_MEMORY, ...
    call_site: str                   # "disabled" unless recorded
    type: str                        # WORKER or DRIVER
    pid: int | None
    ip: str | None
    node_id: str | None = None
    owner_worker_id: str | None = None
    job_id: str | None = None
    locations: list = field(default_factory=list)   # nodes holding a store copy
    worker_id: str | None = None     # the process holding the reference
    owned: bool = False              # that process owns the object (else borrows it)
    storage: str = "UNKNOWN"         # INLINE (owner's memory), STORE, or UNKNOWN here
    local_ref_count: int = 0
    submitted_task_ref_count: int = 0
    contained_in_count: int = 0
    num_borrowers: int = 0
    pinned_in_memory: bool = False


# --- filters ---------------------------------------------------------------------------
_SCALAR_TYPES = ("str", "int", "bool", "float")


def filterable_columns(record_type) -> list[str]:
    """The columns filters may name: those holding a string, number or flag."""
    return [f.name for f in dataclasses.fields(record_type)
            if any(t in str(f.type) for t in _SCALAR_TYPES)
            and "dict" not in str(f.type) and "list" not in str(f.type)]


def parse_filter(text: str) -> tuple[str, str, str]:
    """``key=value`` or ``key!=value`` (the CLI's --filter) as a filter."""
    for predicate in ("!=", "="):
        key, found, value = text.partition(predicate)
        if found and key.strip():
            return key.strip(), predicate, value.strip()
    raise ValueError(f"invalid filter {text!r}: write key=value or key!=value, "
                     f"e.g. --filter state=RUNNING")


def check_filters(filters, record_type) -> list[tuple[str, str, object]]:
    """The filters as (column, predicate, value), after checking each names
    a column of ``record_type`` and a predicate of PREDICATES."""
    columns = filterable_columns(record_type)
    checked = []
    for item in filters or []:
        try:
            key, predicate, value = item
        except (TypeError, ValueError):
            raise ValueError(f"a filter is (key, predicate, value), got {item!r}") from None
        if predicate not in PREDICATES:
            raise ValueError(f"unsupported filter predicate {predicate!r}: use "
                             f"'=' or '!='")
        key = str(key).lower()
        if key not in columns:
            raise ValueError(f"the filter column {key!r} is not supported; "
                             f"supported columns: {', '.join(columns)}")
        checked.append((key, predicate, value))
    return checked


def _convert(text: str, like):
    """``text`` as the type of the column value ``like``; None if it can't be."""
    if isinstance(like, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        return None
    try:
        return type(like)(text)
    except ValueError:
        return None


def _equal(actual, wanted) -> bool:
    if isinstance(wanted, str):
        if isinstance(actual, str):
            return actual.lower() == wanted.lower()
        if isinstance(actual, (bool, int, float)):
            return actual == _convert(wanted, actual)
        if actual is None:
            return wanted.lower() in ("", "none", "null")
    return actual == wanted


def matches(record, filters) -> bool:
    """Whether ``record`` passes every (checked) filter."""
    for key, predicate, value in filters:
        equal = _equal(getattr(record, key), value)
        if equal != (predicate == "="):
            return False
    return True


def select(record_type, records: list, filters, limit: int | None) -> list:
    """The records passing ``filters`` (checked against ``record_type``), at
    most ``limit`` of them (None or negative: all)."""
    filters = check_filters(filters, record_type)
    if filters:
        records = [r for r in records if matches(r, filters)]
    if limit is not None and limit >= 0:
        records = records[:limit]
    return records
