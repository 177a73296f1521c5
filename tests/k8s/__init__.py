"""A Kubernetes API server for tests (kmock + real API semantics) and a kopf runner."""
