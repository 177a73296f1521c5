"""``python3 -m modelwarmup.rehearsal``: the launcher a rehearsal Job runs in the serving image."""

import sys

from modelwarmup.rehearsal.command import launch

sys.exit(launch(sys.argv[1:]))
