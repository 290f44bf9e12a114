"""``miniray memory``: Ray's ``ray memory`` report, rendered (pure: no I/O).

Every object reference held in the cluster (``util/state/objects.py``),
grouped by the address of the node of the process holding it, or by call
site; per group a summary by reference type, then one entry per reference.
To stay readable in 80 columns an entry takes two lines, its fields then
its full object id (and a third with the call site when one was recorded);
``--no-format`` prints one line per entry instead, nothing cut.
"""
from __future__ import annotations

import textwrap

from miniray.cli.format import human_bytes, render_table

__all__ = ["GROUP_BY", "SORT_BY", "sort_records", "group_records", "render_memory"]

GROUP_BY = ("NODE_ADDRESS", "STACK_TRACE")
SORT_BY = ("PID", "OBJECT_SIZE", "REFERENCE_TYPE")
_SUMMARY_TYPES = (("LOCAL_REFERENCE", "Local references"),
                  ("PINNED_IN_MEMORY", "Pinned in memory"),
                  ("USED_BY_PENDING_TASK", "Used by pending tasks"),
                  ("CAPTURED_IN_OBJECT", "Captured in objects"),
                  ("ACTOR_HANDLE", "Actor handles"))
_HEADERS = ["PID", "TYPE", "SIZE", "REFERENCE_TYPE", "TASK_STATUS"]


def sort_records(records: list, sort_by: str) -> list:
    """As Ray sorts: by pid, by size (smallest first) or by reference type."""
    key = {"PID": lambda r: r.pid or 0,
           "OBJECT_SIZE": lambda r: r.object_size,
           "REFERENCE_TYPE": lambda r: r.reference_type}[sort_by]
    return sorted(records, key=key)


def group_records(records: list, group_by: str) -> dict[str, list]:
    """Group keys (node address or call site) -> records, in first-seen order."""
    groups: dict[str, list] = {}
    for record in records:
        key = record.ip if group_by == "NODE_ADDRESS" else record.call_site
        groups.setdefault(key or "unknown", []).append(record)
    return groups


def _size(num: int, units: str | None) -> str:
    return "?" if num is None or num < 0 else human_bytes(num, units)


def _summary(records: list, units: str | None) -> list[str]:
    used = sum(r.object_size for r in records if r.object_size > 0)
    rows = []
    for name, _ in _SUMMARY_TYPES:
        held = [r for r in records if r.reference_type == name]
        if held:
            rows.append([name, str(len(held)),
                         _size(sum(r.object_size for r in held if r.object_size > 0),
                               units)])
    return [f"Mem used by objects: {_size(used, units)}",
            render_table(["REFERENCE_TYPE", "COUNT", "SIZE"], rows)]


def _entries(records: list, units: str | None, width: int, no_format: bool) -> list[str]:
    rows = [[str(r.pid or ""), r.type.capitalize(), _size(r.object_size, units),
             r.reference_type, r.task_status] for r in records]
    if no_format:
        table = render_table(_HEADERS + ["CALL_SITE", "OBJECT_REF"],
                             [row + [r.call_site, r.object_id]
                              for row, r in zip(rows, records)])
        return table.splitlines()
    lines = render_table(_HEADERS, rows, max_width=width).splitlines()
    out = [lines[0], "  OBJECT_REF"]
    for line, record in zip(lines[1:], records):
        out += [line, "  " + record.object_id]
        if record.call_site and record.call_site != "disabled":
            out += textwrap.wrap(record.call_site, width=max(width - 4, 20),
                                 initial_indent="  ", subsequent_indent="    ")
    return out


def render_memory(listing, *, group_by: str = "NODE_ADDRESS",
                  sort_by: str = "OBJECT_SIZE", units: str | None = None,
                  num_entries: int | None = None, stats_only: bool = False,
                  no_format: bool = False, width: int = 80,
                  store_stats: list | None = None, banner: str = "") -> str:
    """The report for an ObjectListing (util/state/objects.py).
    ``store_stats``: each live node's GetNodeStatsReply (None: no answer)."""
    what = "node address" if group_by == "NODE_ADDRESS" else "call site"
    out = [banner] if banner else []
    out += [f"Grouping by {what}...        Sorting by {sort_by.lower().replace('_', ' ')}"
            f"...", f"Display {num_entries if num_entries else 'all'} entries per "
            f"group...", ""]
    groups = group_records(sort_records(listing.records, sort_by), group_by)
    for key, records in groups.items():
        out += [f"--- Summary for {what}: {key} ---", *_summary(records, units), ""]
        if stats_only:
            continue
        shown = records if not num_entries else records[:num_entries]
        out.append(f"--- Object references for {what}: {key} ---")
        out += _entries(shown, units, width, no_format)
        if len(shown) < len(records):
            out.append(f"... and {len(records) - len(shown)} more (--num-entries)")
        out.append("")
    if not groups:
        out += ["(no object references)", ""]
    if store_stats is not None:
        answered = [s for s in store_stats if s is not None]
        used = sum(s.store_used for s in answered)
        capacity = sum(s.store_capacity for s in answered)
        out += ["--- Aggregate object store stats across all nodes ---",
                f"Plasma memory usage {_size(used, units)}, "
                f"{sum(s.store_num_objects for s in answered)} objects, "
                f"{100 * used / capacity if capacity else 0:.1f}% full"]
        if len(answered) < len(store_stats):
            out.append(f"(no store stats from {len(store_stats) - len(answered)} "
                       f"node(s) that did not answer)")
        out.append("")
    notes = [f"{process} holds {total} references: listed its {shown} largest."
             for process, (shown, total) in listing.truncated.items()]
    notes += [f"Left out {missing}" for missing in listing.missing]
    if not listing.call_sites_recorded:
        notes.append("To record callsite information for each ObjectRef created, set "
                     "env variable MINIRAY_RECORD_REF_CREATION_SITES=1")
    for note in notes:
        out += textwrap.wrap(note, width=min(width, 80))
    return "\n".join(out)
