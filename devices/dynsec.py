"""`Dynsec`: a client of Mosquitto's dynamic security plugin, administered over its control
topic (https://mosquitto.org/documentation/dynamic-security/).

    with Dynsec(host="127.0.0.1", port=1883, username="livelab-admin", password=pw) as ds:
        ds.run({"command": "listClients", "verbose": True})

Each `run` publishes one ``{"commands": [...]}`` request to ``$CONTROL/dynamic-security/v1``
and waits for the plugin's answer on ``.../response``; the answers come in the order of the
commands. A command the plugin refuses raises `DynsecError` unless its error is in `allow`.

Errors:
    DynsecError            the plugin refused a command (its message names it)
    BrokerUnavailable      no connection, refused credentials, no answer in time
"""

from __future__ import annotations

import json
import queue
import secrets
import ssl
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


class DynsecError(Exception):
    """The dynamic security plugin refused a command."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command, self.error = command, error


class BrokerUnavailable(Exception):
    """The broker could not be reached, refused the credentials, or did not answer."""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the broker against `ca_file` (or the system's CAs)."""
    return ssl.create_default_context(cafile=ca_file)


class Dynsec:
    """One admin connection to the plugin. Keyword-only arguments, checked at once."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not username or not password:
            raise ValueError("the dynamic security admin needs a username and a password")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.host, self.port, self.timeout = host, port, timeout
        self._answers: queue.Queue[Any] = queue.Queue()
        self._connack: queue.Queue[Any] = queue.Queue()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"livelab-devices-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.on_connect = lambda _c, _u, _f, rc, _p: self._connack.put(rc)
        client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._connack.put(rcs[0])
        client.on_message = lambda _c, _u, msg: self._answers.put(msg.payload)
        self._client = client

    def __enter__(self) -> Dynsec:
        where = f"{self.host}:{self.port}"
        try:
            self._client.connect(self.host, self.port)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUnavailable(f"cannot connect to the broker at {where}: {exc}") from exc
        self._client.loop_start()
        rc = self._wait(self._connack, f"no CONNACK from {where}")
        if rc.is_failure:
            self._close()
            raise BrokerUnavailable(f"the broker at {where} refused the admin login: {rc}")
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        rc = self._wait(self._connack, f"no SUBACK from {where}")
        if rc.is_failure:
            self._close()
            raise BrokerUnavailable(
                f"the broker at {where} refused {RESPONSE_TOPIC} ({rc}): is the dynamic "
                "security plugin loaded, and is this user its admin?"
            )
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _wait(self, q: queue.Queue[Any], what: str) -> Any:
        try:
            return q.get(timeout=self.timeout)
        except queue.Empty:
            self._close()
            raise BrokerUnavailable(f"{what} within {self.timeout} s") from None

    def run(self, *commands: dict[str, Any], allow: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Run `commands` in one request; their responses, in order. An error other than the
        `allow`ed ones (the plugin's messages, e.g. "Client already exists") raises."""
        allowed = set(allow)
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": list(commands)}), qos=1)
        answer = json.loads(self._wait(self._answers, f"no answer on {RESPONSE_TOPIC}"))
        responses: list[dict[str, Any]] = answer.get("responses", [])
        for response in responses:
            error = response.get("error")
            if error and error not in allowed:
                raise DynsecError(response.get("command", "?"), error)
        return responses
