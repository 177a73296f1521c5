"""Pick the torch device to compile on (and to fingerprint), from the seed's --devices and --target.

In compilation because the worker and `modelwarmup verify` on a serving node both need it.
"""

from __future__ import annotations

import re

from modelwarmup import errors


def resolve_device(devices: str | None, target: str | None) -> str:
    """ "cpu" or "cuda:N". Like the seed: unset means the first GPU if any, else the CPU."""
    import torch

    has_gpu = torch.cuda.is_available()
    if devices is None:
        device = "cuda:0" if has_gpu else "cpu"
    elif devices == "cpu":
        device = "cpu"
    else:
        if not has_gpu:
            raise errors.InvalidOptionError(
                f"--devices {devices} asks for a GPU but torch sees none on this node"
            )
        ids = devices.partition(":")[2]
        first = int(ids.split(",")[0]) if ids else 0
        if first >= torch.cuda.device_count():
            raise errors.InvalidOptionError(
                f"--devices {devices}: GPU {first} does not exist (torch sees {torch.cuda.device_count()})"
            )
        device = f"cuda:{first}"  # multi-GPU lists compile on the first; the graphs are per device type
    if target is not None:
        check_target(target, device)
    return device


def check_target(target: str, device: str) -> None:
    """Inductor compiles by running on the device, so --target must describe the hardware present."""
    import torch

    match = re.fullmatch(r"(cpu|cuda|hip)(?::(sm_[0-9]+a?|gfx[0-9a-f]+))?", target)
    if match is None:
        raise errors.InvalidOptionError(f"--target {target!r}: use cpu, cuda, cuda:sm_90 or hip:gfx942")
    api, arch = match.groups()
    if api == "cpu":
        if device != "cpu":
            raise errors.InvalidOptionError(f"--target cpu but the devices resolve to {device}")
        return
    if device == "cpu":
        raise errors.InvalidOptionError(
            f"--target {target}: no GPU here; Inductor cannot compile for a device it cannot run on"
        )
    is_hip = torch.version.hip is not None
    if (api == "hip") != is_hip:
        raise errors.InvalidOptionError(
            f"--target {target}: this node's GPU runtime is {'ROCm' if is_hip else 'CUDA'}"
        )
    if arch is not None and api == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        present = f"sm_{major}{minor}"
        if arch.rstrip("a") != present:
            raise errors.InvalidOptionError(
                f"--target {target}: the GPU here is {present}; run the warm-up on a {arch} node"
            )
