"""The contracts floor: what crosses a process boundary, defined once.

The operator writes Jobs and patches Deployments, the worker writes entries and a summary, the
serving runtime reads entries and its environment. Everything those processes tell each other
(wiring names, the worker's summary, the entry manifest, the compile settings' field types, the
one digest function) lives here and nowhere else. This package imports neither torch nor kopf,
so every process, the serving side included, can import it.
"""
