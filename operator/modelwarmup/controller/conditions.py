"""Kubernetes-style conditions: set one, keeping lastTransitionTime unless the status flips."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Literal, NamedTuple

from modelwarmup.api.common import Condition
from modelwarmup.api.status import ConditionType

ORDER: tuple[str, ...] = tuple(ConditionType)


class State(NamedTuple):
    """A condition's status, reason and message, before it has a type and a transition time."""

    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


class Wanted(NamedTuple):
    """A condition as a reconcile wants it."""

    type: ConditionType
    state: State


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    previous: Sequence[Condition],
    wanted: Sequence[Wanted],
    *,
    generation: int | None,
    at: str,
) -> list[Condition]:
    """The new condition list."""
    old = {c.type: c for c in previous}
    merged: list[Condition] = []
    for type_, (status, reason, message) in wanted:
        before = old.get(type_)
        moved = before is None or before.status != status
        merged.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=at if moved or before is None else before.last_transition_time,
            )
        )
    merged.sort(key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER))
    return merged


def transitions(previous: Sequence[Condition], current: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed: the only moments worth an Event."""
    old = {c.type: (c.status, c.reason) for c in previous}
    return [c for c in current if old.get(c.type) != (c.status, c.reason)]
