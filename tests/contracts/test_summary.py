"""The worker summary survives the kubelet's 4 KiB termination-message limit as valid JSON."""

from __future__ import annotations

import json

import pytest

from modelwarmup.contracts.summary import TERMINATION_MESSAGE_LIMIT, WorkerSummary

ESSENTIAL = ("ok", "reason", "cache_hit", "entry_key", "model_key", "platform_key", "commit")


def big_summary(message: str) -> WorkerSummary:
    return WorkerSummary(
        ok=True,
        reason="Warmed",
        message=message,
        cache_hit=True,
        entry_key="org--model-0123456789abcdef/fedcba9876543210",
        model_key="org--model-0123456789abcdef",
        platform_key="fedcba9876543210",
        commit="c" * 40,
        bytes=123,
        platform={"cpu_flags": " ".join(f"flag{i}" for i in range(600)), "device_type": "cpu"},
    )


@pytest.mark.parametrize("message", ["warmed", "x" * 10_000, 'é\u2028"\\' * 3000])
def test_an_oversized_summary_keeps_what_the_operator_decides_on(message: str) -> None:
    summary = big_summary(message)
    text = summary.termination_message()

    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = WorkerSummary.parse(text)
    assert parsed is not None
    assert {k: getattr(parsed, k) for k in ESSENTIAL} == {k: getattr(summary, k) for k in ESSENTIAL}
    assert parsed.truncated and parsed.platform == {}
    assert summary.message.startswith(parsed.message)


def test_a_summary_that_fits_is_written_whole() -> None:
    summary = WorkerSummary(ok=False, reason="GatedRepository", message="gated", permanent=True)
    assert json.loads(summary.termination_message()) == {
        "ok": False,
        "reason": "GatedRepository",
        "message": "gated",
        "permanent": True,
    }
    assert WorkerSummary.parse(summary.termination_message()) == summary


@pytest.mark.parametrize("text", ["", "Traceback (most recent call last):", "[1, 2]", '{"reason": "x"}'])
def test_anything_else_in_a_termination_message_is_no_summary(text: str) -> None:
    assert WorkerSummary.parse(text) is None
