"""Rehearsal: run the serving engine itself once, capture what it compiled, restore it in serving pods.

Standard library only (plus the contracts floor and the cache layout): the launcher runs inside
the user's serving image, where nothing of ours is installed. See :mod:`modelwarmup.rehearsal.run`.
"""
