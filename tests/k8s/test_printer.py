"""``kubectl get`` columns from the generated CRD."""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml

from .printer import age, evaluate, format_table, printer_columns, rows

CRD = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "crds" / "modelwarmups.modelwarmup.dev.yaml").read_text()
)


def test_printer_columns_of_the_crd_render_like_kubectl() -> None:
    now = datetime.datetime.now(datetime.UTC)
    created = (now - datetime.timedelta(seconds=75)).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = {
        "metadata": {"name": "tiny", "creationTimestamp": created},
        "spec": {"model": {"repo": "devkit/tiny-llama"}},
        "status": {
            "conditions": [
                {"type": "Compiled", "status": "True", "reason": "Compiled"},
                {"type": "Ready", "status": "False", "reason": "Warming"},
            ]
        },
    }
    columns = printer_columns(CRD)
    assert [c["name"] for c in columns] == ["Ready", "Reason", "Model", "Revision", "Age"]
    table = rows([obj], columns)
    assert table[1][:5] == ["tiny", "False", "Warming", "devkit/tiny-llama", "<none>"]
    assert table[1][5] in ("75s", "76s")
    assert format_table(table).splitlines()[0].split() == [
        "NAME",
        "READY",
        "REASON",
        "MODEL",
        "REVISION",
        "AGE",
    ]
    assert evaluate(obj, '.status.conditions[?(@.type=="Nope")].status') is None


def test_ages_read_like_kubectl() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)

    def ago(seconds: int) -> str:
        return age((now - datetime.timedelta(seconds=seconds)).isoformat(), now)

    assert [ago(s) for s in (5, 119, 125, 600, 3 * 3600 + 60, 9 * 3600, 3 * 86400)] == [
        "5s",
        "119s",
        "2m5s",
        "10m",
        "3h1m",
        "9h",
        "3d",
    ]
