"""The warm-up worker: `modelwarmup warm-cache`, the Job's entrypoint."""
