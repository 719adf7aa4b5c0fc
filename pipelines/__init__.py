"""Ray job entrypoints: `python -m pipelines.<job>` locally or under `ray job submit`."""
