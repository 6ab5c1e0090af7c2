"""The demo lab: Oceanhamnen, Helsingborg's new harbour district (the H22 expo site).

It is the built-in scenario ``simulators/scenarios/oceanhamnen.toml``; `OCEANHAMNEN` is its
lab. Any lab name can run it (tests run it under their own unique lab).
"""

from __future__ import annotations

from simulators.lab import Device, LabSpec
from simulators.scenario import DEFAULT_SCENARIO, load_scenario

OCEANHAMNEN: LabSpec = load_scenario(DEFAULT_SCENARIO).labs[0]


def lab_spec(lab: str) -> LabSpec:
    """The device catalogue that lab `lab` runs: the demo lab, under any name."""
    return OCEANHAMNEN


__all__ = ["OCEANHAMNEN", "Device", "LabSpec", "lab_spec"]
