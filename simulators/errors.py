"""Errors of the simulator.

SimulatorError
├── BrokerUnreachable   the MQTT broker refused or did not answer the connection
├── PublishIncomplete   messages were still unacknowledged when the run had to end
├── ScenarioError       a scenario file that cannot be read or does not validate
└── AuditError          the audit could not ask the API (unreachable, key refused, 5xx);
                        a mismatch is a failed `AuditReport`, not an error

`describe_errors` says where and what each problem of a pydantic `ValidationError` is.
"""

from __future__ import annotations

from pydantic import ValidationError


class SimulatorError(Exception):
    """Base class of the simulator's errors."""


class BrokerUnreachable(SimulatorError):
    """'cannot connect to MQTT broker at host:port: reason'."""

    def __init__(self, host: str, port: int, reason: str):
        super().__init__(f"cannot connect to MQTT broker at {host}:{port}: {reason}")
        self.reason = reason


class PublishIncomplete(SimulatorError):
    """Some QoS 1 messages were not acknowledged (or were refused) by the broker."""

    def __init__(self, unacked: int, failed: int, host: str, port: int):
        parts = [f"{unacked} message(s) were not acknowledged"] if unacked else []
        parts += [f"{failed} message(s) were refused"] if failed else []
        super().__init__(f"MQTT broker at {host}:{port}: " + " and ".join(parts or ["incomplete"]))


class ScenarioError(SimulatorError):
    pass


class AuditError(SimulatorError):
    pass


def describe_errors(exc: ValidationError) -> list[str]:
    """Each error of `exc` as 'place: problem' (``labs[0].devices[2].form: ...``)."""
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"{msg}, not {err['input']!r}"
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        problems.append(f"{where.removeprefix('.') or '(top level)'}: {msg}")
    return problems
