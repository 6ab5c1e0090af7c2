"""`livelab-devices`: device credentials for the broker, and the services' own.

livelab-devices create --lab oceanhamnen --device aq-01    # one device; printed once
livelab-devices create --lab oceanhamnen                   # a gateway: every device of the lab
livelab-devices list [--lab oceanhamnen]
livelab-devices revoke oceanhamnen/aq-01/3fa2c4d1
livelab-devices bootstrap                                  # the services' credentials (setup)

The broker and its dynamic security admin come from LIVELAB_MQTT_HOST, LIVELAB_MQTT_PORT,
LIVELAB_MQTT_ADMIN_USERNAME, LIVELAB_MQTT_ADMIN_PASSWORD and LIVELAB_MQTT_TLS_CA (verify the
broker over TLS), read from the environment and then from the credentials file that
scripts/setup writes (LIVELAB_MQTT_ENV_FILE, default /etc/livelab/mqtt.env).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from devices import credentials
from devices.dynsec import BrokerUnavailable, Dynsec, DynsecError, tls_context

DEFAULT_ENV_FILE = "/etc/livelab/mqtt.env"


def env_file() -> Path:
    return Path(os.environ.get("LIVELAB_MQTT_ENV_FILE", DEFAULT_ENV_FILE))


class DevicesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVELAB_", extra="ignore")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_admin_username: str = "livelab-admin"
    mqtt_admin_password: SecretStr | None = None
    mqtt_tls_ca: str | None = None


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (the shell-sourceable file scripts/setup writes); {} when missing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs if not k.startswith("#")}


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# livelab MQTT credentials (scripts/setup, livelab-devices bootstrap)\n")
        f.writelines(f"{k}={v}\n" for k, v in values.items())
    os.replace(tmp, path)


def connect() -> Dynsec:
    s = DevicesSettings(_env_file=env_file() if env_file().is_file() else None)  # type: ignore[call-arg]
    if s.mqtt_admin_password is None:
        raise SystemExit(
            "livelab-devices: no admin password: set LIVELAB_MQTT_ADMIN_PASSWORD or run "
            f"scripts/setup (it writes {env_file()})"
        )
    return Dynsec(
        host=s.mqtt_host,
        port=s.mqtt_port,
        username=s.mqtt_admin_username,
        password=s.mqtt_admin_password.get_secret_value(),
        tls=tls_context(s.mqtt_tls_ca) if s.mqtt_tls_ca else None,
    )


def cmd_create(args: argparse.Namespace) -> int:
    with connect() as ds:
        cred, password = credentials.create(ds, args.lab, args.device)
    scope = "every device" if cred.device == credentials.GATEWAY else f"device {cred.device}"
    print(
        f"created a credential for {scope} of lab {cred.lab}: it may publish under "
        f"{cred.topic_filter} only. The password is shown only once, store it now.",
        file=sys.stderr,
    )
    print(f"username={cred.username}\npassword={password}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with connect() as ds:
        found = credentials.list_credentials(ds, args.lab)
    for cred in found:
        print(f"{cred.username}\t{cred.topic_filter}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with connect() as ds:
        for username in args.username:
            cred = credentials.revoke(ds, username)
            print(f"revoked {cred.username} ({cred.topic_filter})", file=sys.stderr)
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Give each service a password (from the environment, else the file's, else a new one),
    write them to the file and make the broker accept them."""
    path = env_file()
    values = read_env_file(path)
    for service, (username, _) in credentials.SERVICES.items():
        key = f"LIVELAB_MQTT_{service.upper()}"
        values[f"{key}_USERNAME"] = username
        # The environment's password wins (compose sets them), then the file's, then a new one.
        values[f"{key}_PASSWORD"] = (
            os.environ.get(f"{key}_PASSWORD")
            or values.get(f"{key}_PASSWORD")
            or credentials.new_password()
        )
    write_env_file(path, values)
    with connect() as ds:
        for service in credentials.SERVICES:
            password = values[f"LIVELAB_MQTT_{service.upper()}_PASSWORD"]
            credentials.ensure_service(ds, service, password)
    print(f"service credentials in {path}: {', '.join(credentials.SERVICES)}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livelab-devices", description="Manage the broker's device and service credentials."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", help="create a credential for a device or, without --device, "
                       "for every device of a lab (a gateway); prints it once")  # fmt: skip
    p.add_argument("--lab", required=True)
    p.add_argument("--device")
    p.set_defaults(func=cmd_create)
    p = sub.add_parser("list", help="list the device credentials")
    p.add_argument("--lab")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("revoke", help="delete credentials; clients using them are disconnected")
    p.add_argument("username", nargs="+")
    p.set_defaults(func=cmd_revoke)
    p = sub.add_parser("bootstrap", help="create or update the services' credentials")
    p.set_defaults(func=cmd_bootstrap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (BrokerUnavailable, DynsecError, ValueError) as exc:
        raise SystemExit(f"livelab-devices {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
