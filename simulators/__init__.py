"""Simulated live labs that publish telemetry to MQTT (`livelab-sim`), one idea per module;
import from the modules (the package imports nothing, so load processes start fast)."""
