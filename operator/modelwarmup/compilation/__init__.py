"""Ahead-of-time torch.compile for causal LMs: settings, platform fingerprint and the compile run."""
