"""``kubectl get`` for custom resources: a CRD's additionalPrinterColumns rendered as a table.

Only the JSONPath that printer columns use is understood: dotted fields (``.spec.model.repo``)
and one filter per segment on a list (``.status.conditions[?(@.type=="Ready")].status``). Dates
are shown as kubectl shows them: as an age ("45s", "3m12s", "2h").
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

_SEGMENT = re.compile(r'\.([A-Za-z0-9_-]+)(?:\[\?\(@\.([A-Za-z0-9_-]+)==["\']([^"\']*)["\']\)\])?')


def printer_columns(crd: Mapping[str, Any], version: str | None = None) -> list[dict[str, Any]]:
    """The served version's printer columns (the storage version's by default)."""
    versions = crd["spec"]["versions"]
    chosen = next(v for v in versions if (v["name"] == version if version else v.get("storage")))
    return list(chosen.get("additionalPrinterColumns") or [])


def evaluate(obj: Any, path: str) -> Any:
    """The value at a printer column's JSONPath, or None."""
    value = obj
    for name, key, wanted in _SEGMENT.findall(path):
        value = value.get(name) if isinstance(value, Mapping) else None
        if key:
            value = next(
                (item for item in value or [] if isinstance(item, Mapping) and str(item.get(key)) == wanted),
                None,
            )
        if value is None:
            return None
    return value


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """kubectl's human-readable duration since an RFC 3339 time."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds()))
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def rows(objects: Sequence[Mapping[str, Any]], columns: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Header and one row per object: NAME first, then the printer columns."""
    table = [["NAME", *(str(c["name"]).upper() for c in columns)]]
    for obj in objects:
        row = [str(obj["metadata"]["name"])]
        for column in columns:
            value = evaluate(obj, column["jsonPath"])
            row.append(
                age(value) if column.get("type") == "date" else ("<none>" if value is None else str(value))
            )
        table.append(row)
    return table


def format_table(table: Sequence[Sequence[str]], *, header: bool = True, widths: Sequence[int] = ()) -> str:
    """Columns padded like kubectl's (three spaces apart), at least ``widths`` wide."""
    fitted = [max([len(row[i]) for row in table] + list(widths[i : i + 1])) for i in range(len(table[0]))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, fitted, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(lines if header else lines[1:])
