"""Names and topics of CONTRACT.md.

- `lab`, `device`: 1-64 characters of ``a-z 0-9 _ -``, first a letter or digit.
- `sensor`: 1-128 characters of ``A-Z a-z 0-9 _ - . : /``, first a letter or digit.
- topics: ``livelab/{lab}/{device}/telemetry`` and ``livelab/{lab}/{device}/senml``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

LAB_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEVICE_RE = LAB_RE
SENSOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.:/]{0,127}")

TOPIC_ROOT = "livelab"
FORMATS = ("telemetry", "senml")


def is_lab(name: str) -> bool:
    return LAB_RE.fullmatch(name) is not None


def is_device(name: str) -> bool:
    return DEVICE_RE.fullmatch(name) is not None


def is_sensor(name: str) -> bool:
    return SENSOR_RE.fullmatch(name) is not None


def describe_bad_name(kind: str, name: str) -> str:
    """A sentence saying why `name` is not a valid `kind` ('lab', 'device' or 'sensor')."""
    if kind == "sensor":
        rule = "1-128 characters of A-Z a-z 0-9 _ - . : /, starting with a letter or digit"
    else:
        rule = "1-64 characters of a-z 0-9 _ -, starting with a letter or digit"
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f"{kind} name {shown!r} is not valid: it must be {rule}"


class Topic(NamedTuple):
    lab: str
    device: str
    format: str


class TopicError(ValueError):
    """The topic is outside the scheme; `lab` is set when the lab segment was still valid."""

    def __init__(self, message: str, lab: str | None = None, device: str | None = None):
        super().__init__(message)
        self.lab = lab
        self.device = device


def parse_topic(topic: str) -> Topic:
    """Split ``livelab/{lab}/{device}/{format}``; raise `TopicError` saying what is wrong."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT:
        raise TopicError(
            f"topic {topic!r} is outside the scheme livelab/{{lab}}/{{device}}/telemetry "
            "or livelab/{lab}/{device}/senml",
            lab=parts[1]
            if len(parts) > 1 and parts[0] == TOPIC_ROOT and is_lab(parts[1])
            else None,
        )
    _, lab, device, fmt = parts
    if not is_lab(lab):
        raise TopicError(f"topic {topic!r}: " + describe_bad_name("lab", lab))
    if not is_device(device):
        raise TopicError(f"topic {topic!r}: " + describe_bad_name("device", device), lab=lab)
    if fmt not in FORMATS:
        raise TopicError(
            f"topic {topic!r}: unknown format {fmt!r}; use 'telemetry' or 'senml'",
            lab=lab,
            device=device,
        )
    return Topic(lab, device, fmt)


def topic_for(lab: str, device: str, fmt: str = "telemetry") -> str:
    return f"{TOPIC_ROOT}/{lab}/{device}/{fmt}"
