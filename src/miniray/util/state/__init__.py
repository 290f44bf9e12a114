"""The state API: what the cluster is running, with Ray's names and arguments.

    from miniray.util.state import list_tasks, get_log
    list_tasks(filters=[("state", "=", "FAILED")], detail=True)
    for line in get_log(actor_id=actor_id, tail=100):
        print(line)

Lists (``list_actors``, ``list_tasks``, ``list_objects``, ``list_nodes``,
``list_workers``, ``list_jobs``, ``list_placement_groups``) take Ray's
``filters=[(key, "=" | "!=", value), ...]``, ``limit``, ``detail``,
``timeout`` and ``address``, and return records with Ray's field names
(common.py). ``get_*`` return one record or None (``get_objects``: a
list), ``summarize_*`` Ray's summary dicts, ``list_logs`` / ``get_log`` the
nodes' log files (logs.py). The data comes from the GCS's tables and from
each node's raylet (api.py); a query never starts or joins a cluster
(client.py). Used by the ``miniray list/get/summary/memory/logs/timeline``
commands (cli/state_cli.py).
"""
from miniray.util.state.api import (
    get_actor, get_job, get_node, get_objects, get_placement_group, get_task, get_worker,
    list_actors, list_jobs, list_nodes, list_objects, list_placement_groups, list_tasks,
    list_workers, summarize_actors, summarize_objects, summarize_tasks, timeline,
    timeline_events)
from miniray.util.state.common import (
    ActorState, JobState, NodeState, ObjectState, PlacementGroupState,
    RayStateApiException, TaskState, WorkerState)
from miniray.util.state.logs import get_log, list_logs

__all__ = [
    "ActorState", "JobState", "NodeState", "ObjectState", "PlacementGroupState",
    "RayStateApiException", "TaskState", "WorkerState",
    "get_actor", "get_job", "get_log", "get_node", "get_objects", "get_placement_group",
    "get_task", "get_worker", "list_actors", "list_jobs", "list_logs", "list_nodes",
    "list_objects", "list_placement_groups", "list_tasks", "list_workers",
    "summarize_actors", "summarize_objects", "summarize_tasks", "timeline",
    "timeline_events",
]
