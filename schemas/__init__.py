"""The contract shared by every part of livelab.

- `schemas.names`: the name alphabets of CONTRACT.md (lab, device, sensor) and MQTT topics.
- `schemas.times`: RFC 3339 timestamps as the contract spells them.
- `schemas.telemetry`: the JSON telemetry forms, as builders (simulators) and as a JSON Schema.
- `schemas.migrate`: applies the numbered SQL files in `schemas/migrations/`.
- `schemas.rollups`: the rollup tiers (15-minute, hourly, daily partials) ingest keeps and the
  API reads.
"""
