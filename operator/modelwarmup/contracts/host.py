"""Facts about the host that the standard library can read: used by the compile platform's
fingerprint and by the rehearsal, which runs in serving images where torch is not ours."""

from __future__ import annotations

import re

# Names of environment variables that may hold a credential: never read into a key or a log.
SECRET_HINT = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|API_?KEY|PRIVATE", re.I)

# /proc/cpuinfo flags that change which kernels Inductor (or oneDNN behind it) emits.
_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    # aarch64 ("Features:" line)
    "asimd",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The flags of the first CPU listed, restricted to :data:`_CPU_FLAGS`, space-separated."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    present = set(value.split())
                    return " ".join(flag for flag in _CPU_FLAGS if flag in present)
    except OSError:
        pass
    return ""
