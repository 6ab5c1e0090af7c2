"""Simulated live labs that publish telemetry to MQTT (`livelab-sim`).

Modules, one idea each: `models` (sensor models: a reading is a pure function of seed,
device, sensor and time), `lab` (`LabSpec`, `Device`), `scenario` (TOML files; built-ins in
``scenarios/``), `faults`, `stream` (the messages of labs in time order, faults injected),
`messages` (payloads of forms 1, 2, 3 and SenML), `publisher` (paho-mqtt with flow control),
`options` (`RunOptions`, `SimSettings`), `runner` (`backfill`, `live`, `replay`), `replay`
(CSV files), `loadgen` (the load generator), `manifest` (what a run sent), `audit` /
`report` / `apiclient` (was it stored exactly once?), `record`, `progress`, `errors`.
Import from the modules (the package imports nothing, so load processes start fast).
"""
