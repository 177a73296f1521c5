"""The cache volume: its layout, atomic entries, locks and keys."""
