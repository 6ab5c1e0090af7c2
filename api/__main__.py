"""`livelab-api`: run the HTTP API, and manage its API keys.

livelab-api serve [--host H] [--port P]
KEY=$(livelab-api create-key --name partner-x --lab malmo-air --lab lund-noise)
livelab-api create-key --name ops --all-labs
livelab-api list-keys
livelab-api revoke-key llk_Ab12Cd34     # by prefix (first 12 characters) or by name
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import psycopg

from api import keys
from api.settings import Settings

log = logging.getLogger("livelab.api")


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"livelab-api: cannot connect to the database: {exc}".strip()) from None


def _no_table(exc: psycopg.errors.UndefinedTable) -> SystemExit:
    return SystemExit(
        f"livelab-api: {exc.diag.message_primary}; create the schema first with livelab-migrate"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    overrides = {"database_url": args.database_url}
    if args.host is not None:
        overrides["api_host"] = args.host
    if args.port is not None:
        overrides["api_port"] = args.port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    base = f"http://{settings.api_host}:{settings.api_port}"
    log.info("livelab API on %s: docs at %s/docs, OpenAPI at %s/openapi.json", base, base, base)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=args.log_level.lower(),
    )
    return 0


def cmd_create_key(args: argparse.Namespace) -> int:
    labs = [keys.ALL_LABS] if args.all_labs else args.lab
    try:
        keys.check_labs(labs)
    except ValueError as exc:
        raise SystemExit(f"livelab-api create-key: {exc}") from None
    with _connect(args.database_url) as conn:
        try:
            key, info = keys.create_key(conn, args.name, labs)
        except psycopg.errors.UndefinedTable as exc:
            raise _no_table(exc) from None
        except ValueError as exc:
            raise SystemExit(f"livelab-api create-key: {exc}") from None
    scope = "every lab" if info.all_labs else ", ".join(info.labs)
    print(
        f"created key {info.prefix}... named {info.name!r} for {scope}; "
        "it is shown only once, store it now",
        file=sys.stderr,
    )
    print(key)
    return 0


def cmd_list_keys(args: argparse.Namespace) -> int:
    with _connect(args.database_url) as conn:
        try:
            found = keys.list_keys(conn)
        except psycopg.errors.UndefinedTable as exc:
            raise _no_table(exc) from None
    print(f"{'PREFIX':<14}{'NAME':<24}{'CREATED':<22}{'REVOKED':<22}LABS")
    for k in found:
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M:%SZ") if k.revoked_at else "-"
        created = k.created_at.strftime("%Y-%m-%d %H:%M:%SZ")
        print(f"{k.prefix:<14}{k.name:<24}{created:<22}{revoked:<22}{','.join(k.labs)}")
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    with _connect(args.database_url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        try:
            revoked = keys.revoke_key(conn, args.key)
        except psycopg.errors.UndefinedTable as exc:
            raise _no_table(exc) from None
        except LookupError as exc:
            print(f"livelab-api revoke-key: {exc}", file=sys.stderr)
            return 1
    for k in revoked:
        print(f"revoked key {k.prefix}... named {k.name!r}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livelab-api",
        description="The livelab HTTP API for partners, and its API keys.",
        epilog="Every setting can also come from the environment: LIVELAB_DATABASE_URL, "
        "LIVELAB_API_HOST, LIVELAB_API_PORT, LIVELAB_API_MAX_BUCKETS, ... "
        "(see api/settings.py).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=os.environ.get(
            "LIVELAB_DATABASE_URL", Settings.model_fields["database_url"].default
        ),
        help="PostgreSQL connection URL (env LIVELAB_DATABASE_URL; default %(default)s)",
    )
    common.add_argument(
        "--log-level",
        default=os.environ.get("LIVELAB_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (env LIVELAB_LOG_LEVEL; default %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP API (uvicorn)",
        description="Run the HTTP API. Applies the schema migrations at start-up unless "
        "LIVELAB_API_MIGRATE=false. The OpenAPI docs are at /docs.",
    )
    serve.add_argument(
        "--host", help="address to listen on (env LIVELAB_API_HOST; default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, help="port (env LIVELAB_API_PORT; default 8000)")
    serve.set_defaults(func=cmd_serve)

    create = sub.add_parser(
        "create-key",
        parents=[common],
        help="create an API key; prints only the key on stdout",
        description="Create an API key scoped to some labs (or all). Only the key is printed on "
        "stdout, so scripts can do KEY=$(livelab-api create-key ...); a note goes to stderr. "
        "The key is not stored, only its SHA-256: it cannot be shown again.",
    )
    create.add_argument("--name", required=True, help="who or what the key is for (e.g. partner-x)")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--lab", action="append", metavar="LAB", help="a lab the key may read (repeatable)"
    )
    scope.add_argument("--all-labs", action="store_true", help="the key may read every lab")
    create.set_defaults(func=cmd_create_key)

    lst = sub.add_parser(
        "list-keys",
        parents=[common],
        help="list the API keys (prefix, name, scope, revoked)",
        description="List the API keys: prefix, name, creation and revocation times, labs.",
    )
    lst.set_defaults(func=cmd_list_keys)

    revoke = sub.add_parser(
        "revoke-key",
        parents=[common],
        help="revoke an API key by prefix or name",
        description="Revoke the active key with this prefix (its first 12 characters, as "
        "list-keys shows) or name. The API notices within LIVELAB_API_KEY_CACHE_SECONDS "
        "(default 30 s).",
    )
    revoke.add_argument("key", metavar="PREFIX_OR_NAME", help="the key's prefix or name")
    revoke.set_defaults(func=cmd_revoke_key)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
