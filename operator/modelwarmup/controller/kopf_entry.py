"""For `kopf run -m modelwarmup.controller.kopf_entry`: importing it registers the handlers on
kopf's default registry, with settings read once from the environment."""

from __future__ import annotations

import kopf

from modelwarmup.controller import handlers
from modelwarmup.controller.settings import OperatorSettings

handlers.register(kopf.get_default_registry(), OperatorSettings.from_env())
