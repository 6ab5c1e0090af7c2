"""Device and service credentials, kept by the broker's dynamic security plugin.

A device credential is a broker client named ``{lab}/{device}/{id}`` (one device) or
``{lab}/+/{id}`` (a gateway: every device of the lab), with one role per scope that allows
*publishing* under ``livelab/{lab}/{device}/#`` (or ``livelab/{lab}/+/#``) and nothing else:
the plugin denies every subscription and every other publish by default. The password is
generated here, shown once and kept by the broker only as a salted PBKDF2 hash.

The services have fixed usernames and roles (`SERVICES`): the ingest worker subscribes (also
in a share group) and publishes nothing, the simulator publishes under ``livelab/``, the test
suite may do everything.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from devices.dynsec import Dynsec
from schemas.names import is_device, is_lab

GATEWAY = "+"
_USERNAME = re.compile(r"^(?P<lab>[^/]+)/(?P<device>[^/]+)/(?P<id>[0-9a-f]{8})$")


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True, "priority": 0}


#: service -> (username, the ACLs of its role)
SERVICES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "ingest": (
        "livelab-ingest",
        [
            _acl("subscribePattern", "livelab/#"),
            _acl("subscribePattern", "$share/+/livelab/#"),  # the plugin sees the $share form
        ],
    ),
    "sim": ("livelab-sim", [_acl("publishClientSend", "livelab/#")]),
    "tests": (
        "livelab-tests",
        [
            _acl("publishClientSend", "#"),
            _acl("subscribePattern", "#"),
            _acl("subscribePattern", "$share/#"),
        ],
    ),
}


@dataclass(frozen=True)
class Credential:
    username: str
    lab: str
    device: str  # GATEWAY for every device of the lab

    @property
    def topic_filter(self) -> str:
        return f"livelab/{self.lab}/{self.device}/#"

    @property
    def role(self) -> str:
        return f"livelab-publish:{self.lab}/{self.device}"


def parse_username(username: str) -> Credential | None:
    """The device credential `username` names, or None (a service, the admin, anything else)."""
    m = _USERNAME.match(username)
    if m is None or not is_lab(m["lab"]):
        return None
    if m["device"] != GATEWAY and not is_device(m["device"]):
        return None
    return Credential(username, m["lab"], m["device"])


def new_password() -> str:
    return secrets.token_urlsafe(24)


def create(ds: Dynsec, lab: str, device: str | None = None) -> tuple[Credential, str]:
    """A new credential for `device` of `lab` (None: a gateway), and its password."""
    if not is_lab(lab):
        raise ValueError(f"invalid lab name {lab!r}")
    if device is not None and not is_device(device):
        raise ValueError(f"invalid device name {device!r}")
    cred = Credential(f"{lab}/{device or GATEWAY}/{secrets.token_hex(4)}", lab, device or GATEWAY)
    password = new_password()
    ds.run(
        {
            "command": "createRole",
            "rolename": cred.role,
            "acls": [_acl("publishClientSend", cred.topic_filter)],
        },
        allow=["Role already exists"],
    )
    ds.run(
        {
            "command": "createClient",
            "username": cred.username,
            "password": password,
            "textname": f"livelab device credential for {cred.topic_filter}",
            "roles": [{"rolename": cred.role}],
        }
    )
    return cred, password


def list_credentials(ds: Dynsec, lab: str | None = None) -> list[Credential]:
    """The device credentials (of `lab`), sorted by username."""
    (response,) = ds.run({"command": "listClients", "verbose": False, "count": -1, "offset": 0})
    found = [parse_username(name) for name in response["data"]["clients"]]
    return sorted(
        (c for c in found if c is not None and (lab is None or c.lab == lab)),
        key=lambda c: c.username,
    )


def revoke(ds: Dynsec, username: str) -> Credential:
    """Delete a device credential: the broker disconnects a client using it at once."""
    cred = parse_username(username)
    if cred is None:
        raise ValueError(f"{username!r} is not a device credential (lab/device/id)")
    ds.run({"command": "deleteClient", "username": username})
    return cred


def ensure_service(ds: Dynsec, service: str, password: str) -> str:
    """Create or update the service's role and client so that `password` logs it in; its
    username."""
    username, acls = SERVICES[service]
    role = f"livelab-service:{service}"
    ds.run({"command": "createRole", "rolename": role}, allow=["Role already exists"])
    for acl in acls:
        ds.run(
            {"command": "addRoleACL", "rolename": role, **acl},
            allow=["ACL with this topic already exists"],
        )
    (created,) = ds.run(
        {
            "command": "createClient",
            "username": username,
            "password": password,
            "textname": f"livelab {service} service",
            "roles": [{"rolename": role}],
        },
        allow=["Client already exists"],
    )
    if created.get("error"):  # an earlier setup made it: its password and role may differ
        ds.run({"command": "setClientPassword", "username": username, "password": password})
        (client,) = ds.run({"command": "getClient", "username": username})
        if role not in {r["rolename"] for r in client["data"]["client"].get("roles", [])}:
            ds.run({"command": "addClientRole", "username": username, "rolename": role})
    return username
