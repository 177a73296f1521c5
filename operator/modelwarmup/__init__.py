"""modelwarmup: download and pre-compile models once, start every serving pod warm."""

__version__ = "0.1.0"
