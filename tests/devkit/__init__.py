"""Test and demo helpers: a local hub and a tiny model; never used by the operator or worker at run time."""
