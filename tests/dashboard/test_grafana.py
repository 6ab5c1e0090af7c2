"""The Grafana recipe: every Infinity query of deploy/grafana/livelab-dashboard.json, with its
variables filled in as Grafana would, answers from the real API with the columns it selects."""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from schemas.times import parse_rfc3339

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "livelab-dashboard.json").read_text())
INFINITY = "yesoreyeram-infinity-datasource"


def queries() -> list[tuple[str, dict[str, Any]]]:
    """(where, query) for every Infinity query: the panels' targets and the variables'."""
    found = [
        (f"panel {p['title']!r}", t) for p in DASHBOARD["panels"] for t in p.get("targets", [])
    ]
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            found.append((f"variable {var['name']}", var["query"]["infinityQuery"]))
    return found


def grafana_iso(t: datetime) -> str:
    """What ${__from:date:iso} gives: UTC with milliseconds and Z."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_dashboard_uses_the_infinity_data_source_and_its_variables() -> None:
    names = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "api", "lab", "sensor", "bucket"} <= names
    assert len(queries()) >= 6
    for where, query in queries():
        assert query.get("datasource", {}).get("type", INFINITY) == INFINITY, where
        assert query["source"] == "url" and query["parser"] == "backend", where
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"] == {"type": INFINITY, "uid": "${datasource}"}
        selectors = {c["text"] for t in panel["targets"] for c in t["columns"]}
        for step in panel.get("transformations", []):
            assert set(step["options"]["fields"]) <= selectors, panel["title"]
    # The provisioned data source sends the key, to the API the dashboard's default names.
    provisioning = (GRAFANA / "datasource.yaml").read_text()
    assert "httpHeaderName1: Authorization" in provisioning
    assert "httpHeaderValue1: Bearer $LIVELAB_API_KEY" in provisioning
    api = next(v for v in DASHBOARD["templating"]["list"] if v["name"] == "api")
    assert f"- {api['query']}\n" in provisioning


def test_every_query_answers_from_the_api_with_the_columns_it_selects(
    api_url: str, seeded: str, lab: str
) -> None:
    now = datetime.now(UTC)
    values = {
        "api": api_url,
        "lab": lab,
        "sensor": "no2",
        "bucket": "1h",
        "__from:date:iso": grafana_iso(now - timedelta(hours=24)),
        "__to:date:iso": grafana_iso(now),
    }

    def fill(text: str) -> str:
        out = re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)
        assert "$" not in out, text
        return out

    with urllib.request.urlopen(f"{api_url}/openapi.json", timeout=10) as resp:
        paths = json.load(resp)["paths"]
    answers: dict[str, list[dict[str, Any]]] = {}
    for where, query in queries():
        params = [(p["key"], fill(p["value"])) for p in query["url_options"].get("params", [])]
        # The API ignores a query parameter it does not know: each must be one it documents.
        path = query["url"].removeprefix("${api}").replace("${lab}", "{lab}")
        documented = {p["name"] for p in paths[path]["get"].get("parameters", [])}
        assert {k for k, _ in params} <= documented, f"{where}: {params}"
        url = fill(query["url"]) + ("?" + urlencode(params) if params else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {seeded}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200, where
            body = resp.read().decode()
        if query["type"] == "csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(body)))
        else:
            rows = json.loads(body)[query["root_selector"]]
        assert rows, f"{where}: no rows from {url}"
        for column in query["columns"]:
            assert column["selector"] in rows[0], f"{where}: no field {column['selector']!r}"
            if column["type"] == "timestamp":
                parse_rfc3339(rows[0][column["selector"]])
            if column["type"] == "number" and query["type"] == "csv":
                float(rows[0][column["selector"]])
        answers[where] = rows
    # The lab variable offers the test's lab, the sensor variable the sensor it sent.
    assert lab in {row["lab"] for row in answers["variable lab"]}
    assert {row["sensor"] for row in answers["variable sensor"]} == {"no2"}
