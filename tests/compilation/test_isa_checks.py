"""Inductor's vector-ISA checks: answered once, reused only on the same compiler, torch and CPU.

Each case runs in a fresh interpreter: the wrapper is installed on torch's class for the whole
process, and Inductor caches its ISA choice per process. The checks are real (gcc compiles the
test library, a child Python loads it); only "another CPU" is simulated, by replacing the CPU
flags the digest reads, since this machine has one CPU.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
from tests.compilation.test_compile_roundtrip import _run_python

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the AVX2 check is x86's")

CHECK = """
    import json
    from pathlib import Path
    from modelwarmup.compilation import isa_checks
    {before}
    loaded = isa_checks.load([Path({answers!r})])
    from torch._inductor import cpu_vec_isa
    answer = cpu_vec_isa.VecAVX2().check_build(cpu_vec_isa.VecISA._avx_code)
    isa_checks.save(Path({answers!r}))
    print(json.dumps({{"loaded": loaded, "answer": answer, "ran": isa_checks.ran()}}))
"""


def _check(answers: Path, before: str = "") -> dict[str, object]:
    return _run_python(CHECK.format(answers=str(answers), before=before), timeout=180)


def test_a_saved_answer_is_reused_and_only_on_the_same_platform(tmp_path: Path) -> None:
    answers = tmp_path / "isa_checks.json"
    first = _check(answers)
    assert first == {"loaded": 0, "answer": True, "ran": 1}  # gcc built it, a child loaded it

    # Flip the saved answer: a process that takes it must say False without checking.
    saved = json.loads(answers.read_text())
    ((digest, answer),) = saved["answers"].items()
    assert answer is True
    saved["answers"][digest] = False
    answers.write_text(json.dumps(saved))
    assert _check(answers) == {"loaded": 1, "answer": False, "ran": 0}

    # On another CPU the digest differs: the answer is not taken, the check runs again.
    other_cpu = "isa_checks.cpu_flags = lambda: 'sse4_2 avx avx2'"
    saved["answers"] = {digest: False}
    answers.write_text(json.dumps(saved))
    assert _check(answers, before=other_cpu) == {"loaded": 1, "answer": True, "ran": 1}


def test_unreadable_answer_files_are_no_answers(tmp_path: Path) -> None:
    from modelwarmup.compilation import isa_checks

    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"format": 99, "answers": {"x": True}}))
    (tmp_path / "c.json").write_text(json.dumps({"format": 1, "answers": {"y": "yes", "z": False}}))
    paths = [tmp_path / name for name in ("a.json", "b.json", "c.json", "missing.json")]
    assert isa_checks.read(paths) == {"z": False}
