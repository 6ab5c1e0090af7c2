"""`GET /v1/labs`: the labs the key may see."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ApiKey, Conn
from api.models import LabPage, LabPublic
from api.openapi import V1_RESPONSES
from schemas.times import format_rfc3339

router = APIRouter(prefix="/v1", tags=["labs"], responses=V1_RESPONSES)


@router.get("/labs", response_model=LabPage)
async def list_labs(key: ApiKey, conn: Conn) -> LabPage:
    """The labs this key may see, with device, sensor and reading counts, sorted by name."""
    cur = await conn.execute(
        "SELECT lab, count(DISTINCT device), count(*), coalesce(sum(reading_count), 0), "
        "min(first_time), max(last_time) FROM series "
        "WHERE %(all)s OR lab = ANY(%(labs)s) GROUP BY lab",
        {"all": key.all_labs, "labs": list(key.labs)},
    )
    found = {
        row[0]: LabPublic(
            lab=row[0],
            device_count=row[1],
            sensor_count=row[2],
            reading_count=int(row[3]),
            first_reading=format_rfc3339(row[4]) if row[4] else None,
            last_reading=format_rfc3339(row[5]) if row[5] else None,
        )
        for row in await cur.fetchall()
    }
    for lab in key.labs:
        if lab != "*" and lab not in found:
            # Named in the key's scope but without data yet: shown, with nothing in it.
            found[lab] = LabPublic(
                lab=lab,
                device_count=0,
                sensor_count=0,
                reading_count=0,
                first_reading=None,
                last_reading=None,
            )
    return LabPage(data=[found[lab] for lab in sorted(found)], next=None)
