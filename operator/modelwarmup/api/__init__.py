"""The ModelWarmup API (modelwarmup.dev/v1alpha1): pydantic models, the single source of truth."""
