"""Kubernetes resource quantities ("500m", "64Gi", 2), checked as the API server will check them.

The API server rejects a Job whose container asks for a malformed, negative or fractional-GPU
quantity, or for requests above its limits; a ModelWarmup that would produce one is rejected up
front instead, naming the field, rather than failing later at Job creation.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

# apimachinery's quantity grammar (resource.Quantity), unsigned: a negative quantity is no use here.
PATTERN: Final = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_SUFFIXES: Final = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip
# Resources the kubelet measures in fractions; every other (extended) resource, such as
# nvidia.com/gpu, is counted in whole units.
_FRACTIONAL: Final = ("cpu", "memory", "ephemeral-storage", "storage")


def parse(value: int | str) -> Decimal:
    """The quantity's value; ValueError for anything the API server would reject."""
    text = str(value)
    if not re.fullmatch(PATTERN, text):
        raise ValueError(f"{text!r} should match a quantity such as 500m, 64Gi or 2 (never negative)")
    number = re.match(r"^[0-9.]+([eE][+-]?[0-9.]+)?", text)
    assert number is not None
    suffix = text[number.end() :]
    try:
        return Decimal(number.group(0)) * _SUFFIXES[suffix]
    except (InvalidOperation, KeyError):
        raise ValueError(f"{text!r} is not a quantity") from None


def check_resources(limits: dict[str, int | str], requests: dict[str, int | str]) -> None:
    """What the API server checks of a container's resources; ValueError naming the first problem."""
    for where, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            amount = parse(value)
            fractional = name in _FRACTIONAL or name.startswith("hugepages-")
            if not fractional and amount != amount.to_integral_value():
                raise ValueError(
                    f"{where}.{name}: {value!r} must be a whole number ({name} is not divisible)"
                )
    for name, value in requests.items():
        if name in limits and parse(value) > parse(limits[name]):
            raise ValueError(f"requests.{name}: {value!r} must be <= limits.{name} ({limits[name]!r})")
