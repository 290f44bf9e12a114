"""Rendering state records for the terminal: aligned tables that fit its
width, JSON, and YAML (a small emitter for the plain data the state API
returns, so no YAML library is needed). Pure: no I/O."""
from __future__ import annotations

import json
import math
import re

__all__ = ["ELLIPSIS", "ID_WIDTH", "truncate", "short_id", "shorten_ids", "id_matches",
           "human_bytes", "render_table", "to_json", "to_yaml"]

ELLIPSIS = "\u2026"
ID_WIDTH = 12                    # hex digits of an id shown in tables (plus "…")
_GAP = "  "
_FIELD = 8                       # hex digits of a 4-byte field of an id
_MIN_COLUMN = 6


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one "…" if cut."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    return text[:width - 1] + ELLIPSIS


def short_id(value) -> str:
    """An id as tables show it: its first 12 hex digits and "…"."""
    if not value:
        return ""
    text = str(value)
    return text if len(text) <= ID_WIDTH + 1 else text[:ID_WIDTH] + ELLIPSIS


def shorten_ids(values) -> dict[str, str]:
    """How a table column shows each of these ids in 13 characters, so that
    no two look alike. Random ids (nodes, workers, actors) differ at once:
    their first 12 hex digits and "…". Task and object ids of one
    submitter share a long prefix and differ near the end: they show as
    their first 6 digits, "…" and the 5 digits where they differ
    (``id_matches`` finds an id from either form). Ids that still look
    alike are shown whole."""
    distinct = sorted({str(v) for v in values if v})
    plain = {v: short_id(v) for v in distinct}
    head = ID_WIDTH // 2
    tail = ID_WIDTH - head - 1
    if len(set(plain.values())) == len(distinct):
        if not any(_blank_head(v) for v in distinct):
            return plain
        if len(distinct) == 1:     # a driver's put: 0000… then its job and index
            return {v: v if len(v) <= ID_WIDTH + 1 else v[:head] + ELLIPSIS + v[-tail:]
                    for v in distinct}
    length = min(len(v) for v in distinct)
    # The low digits of the field where they last differ (ids are made of
    # 4-byte fields: a counter, a job id, an index), else any window that
    # tells them apart, rightmost first.
    last = max(i for i in range(length) if len({v[i] for v in distinct}) > 1)
    end = last + 1 + (length - last - 1) % _FIELD
    for start in [max(head, end - tail), *range(length - tail, head - 1, -1)]:
        shown = {v: v[:head] + ELLIPSIS + v[start:start + tail] for v in distinct}
        if len(set(shown.values())) == len(distinct):
            return shown
    return {v: v for v in distinct}


def _blank_head(text: str) -> bool:
    """Whether an id's first digits tell nothing: a driver's task and put
    ids start with 20 zero bytes (its task id), nil parts are all f."""
    start = text[:ID_WIDTH].lower()
    return len(text) > ID_WIDTH + 1 and start in ("0" * ID_WIDTH, "f" * ID_WIDTH)


def id_matches(full: str, shown: str, aligned: bool = True) -> bool:
    """Whether ``full`` is the id a table showed as ``shown``: the id
    itself, its start, or ``start…part`` (as shorten_ids writes it: with
    ``aligned``, ``part`` must end where a 4-byte field of the id ends)."""
    full, shown = full.lower(), shown.lower().strip()
    if ELLIPSIS not in shown:
        return full.startswith(shown)
    start, _, part = shown.partition(ELLIPSIS)
    if not full.startswith(start):
        return False
    if not aligned:
        return part in full[len(start):]
    return any(full[len(start):end].endswith(part)
               for end in range(len(full), len(start), -_FIELD))


_UNITS = (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024))


def human_bytes(num: float | None, unit: str | None = None) -> str:
    """``num`` bytes in the largest binary unit it reaches (or ``unit``:
    B, KB, MB or GB, decimal as `ray memory --units` has them)."""
    if num is None:
        return ""
    if unit:
        scale = {"B": 1, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}[unit.upper()]
        return f"{num / scale:.2f} {unit.upper()}" if scale > 1 else f"{int(num)} B"
    for name, scale in _UNITS:
        if abs(num) >= scale:
            return f"{num / scale:.1f} {name}"
    return f"{int(num)} B"


def render_table(headers: list[str], rows: list[list[str]],
                 max_width: int | None = None) -> str:
    """Rows aligned under their headers, columns two spaces apart. With
    ``max_width``, the widest columns are narrowed (their cells cut with
    "…", never below the header or 6 characters) until the table fits."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if max_width:
        floors = [max(len(h), _MIN_COLUMN) for h in headers]
        excess = sum(widths) + len(_GAP) * (len(widths) - 1) - max_width
        while excess > 0:
            candidates = [i for i, w in enumerate(widths) if w > floors[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    lines = []
    for cells in [headers, *rows]:
        line = _GAP.join(truncate(cell, w).ljust(w) for cell, w in zip(cells, widths))
        lines.append(line.rstrip())
    return "\n".join(lines)


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=str)


# --- YAML --------------------------------------------------------------------------------
_PLAIN = re.compile(r"^[A-Za-z0-9_/(][A-Za-z0-9_./()@+ -]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}
_DATE = re.compile(r"^\d{4}-\d\d?-\d\d?")


def _looks_like_a_number(text: str) -> bool:
    for parse in (float, lambda t: int(t, 0)):
        try:
            parse(text.replace("_", ""))
            return True
        except ValueError:
            pass
    return False


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED and not text.endswith(" ") \
            and not _looks_like_a_number(text) and not _DATE.match(text):
        return text
    return json.dumps(text)            # a JSON string is a YAML double-quoted scalar


def _is_collection(value) -> bool:
    return isinstance(value, (dict, list, tuple)) and len(value) > 0


def _yaml_lines(value, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        lines = []
        for key, item in value.items():
            if _is_collection(item):
                lines.append(f"{pad}{_scalar(str(key))}:")
                lines += _yaml_lines(item, indent + 2)
            else:
                lines.append(f"{pad}{_scalar(str(key))}: {_inline(item)}")
        return lines
    if isinstance(value, (list, tuple)):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            if _is_collection(item):
                nested = _yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {_inline(item)}")
        return lines
    return [pad + _scalar(value)]


def _inline(value) -> str:
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, (list, tuple)) and not value:
        return "[]"
    return _scalar(value)


def to_yaml(data) -> str:
    """``data`` (dicts, lists, strings, numbers, flags, None) as block YAML."""
    return "\n".join(_yaml_lines(data, 0))
