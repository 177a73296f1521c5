"""The operator: reconcile ModelWarmup resources into warm-up Jobs, status and serving wiring.

Handlers (:mod:`.handlers`) are thin: they observe the cluster (:mod:`.observe`), ask a pure
function what should be (:mod:`.decide`), and apply the answer (:mod:`.apply`).
"""
