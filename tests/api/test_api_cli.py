"""`livelab-api` key commands against the session database."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=__import__("sys").stderr)
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    db: psycopg.Connection,
    client: TestClient,
    lab: str,
) -> None:
    name = f"cli-{secrets.token_hex(4)}"
    code, out, err = run(
        capsys,
        "create-key",
        "--database-url",
        database_url,
        "--name",
        name,
        "--lab",
        lab,
        "--lab",
        lab + "-2",
    )
    assert code == 0
    key = out.strip()
    assert out == key + "\n" and key.startswith("llk_")  # only the key on stdout
    assert name in err and key not in err
    assert client.get("/v1/labs", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    code, out, _ = run(capsys, "list-keys", "--database-url", database_url)
    assert code == 0
    line = next(row for row in out.splitlines() if name in row)
    assert key[:12] in line and f"{lab},{lab}-2" in line and key not in out

    code, _, err = run(capsys, "revoke-key", "--database-url", database_url, key[:12])
    assert code == 0 and name in err
    assert client.get("/v1/labs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    code, _, err = run(capsys, "revoke-key", "--database-url", database_url, name)
    assert code == 1 and "no active key" in err


def test_create_all_labs_key(
    capsys: pytest.CaptureFixture[str], database_url: str, db: psycopg.Connection
) -> None:
    code, out, err = run(
        capsys, "create-key", "--database-url", database_url, "--name", "ops", "--all-labs"
    )
    assert code == 0 and "every lab" in err
    row = db.execute("SELECT labs FROM api_keys WHERE prefix = %s", (out.strip()[:12],)).fetchone()
    assert row == (["*"],)


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "x", "--lab", "Bad Lab"],
        ["--name", "x"],
        ["--name", "x", "--lab", "a", "--all-labs"],
        ["--lab", "a"],
    ],
)
def test_create_key_refuses_bad_arguments(
    capsys: pytest.CaptureFixture[str], database_url: str, args: list[str]
) -> None:
    code, out, _ = run(capsys, "create-key", "--database-url", database_url, *args)
    assert code != 0 and out == ""


@pytest.mark.parametrize("command", ["serve", "create-key", "list-keys", "revoke-key"])
def test_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "--database-url" in out
