"""`GET /v1/labs/{lab}/rejections`: what could not be stored, and why; newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import cursors
from api.deps import Conn, Lab
from api.models import RejectionPage, RejectionPublic
from api.openapi import LAB_RESPONSES, V1_RESPONSES
from schemas.times import format_rfc3339

router = APIRouter(prefix="/v1", tags=["rejections"], responses=V1_RESPONSES)


@router.get(
    "/labs/{lab}/rejections",
    response_model=RejectionPage,
    responses=LAB_RESPONSES,
)
async def rejections(
    lab: Lab,
    conn: Conn,
    limit: Annotated[
        int, Query(ge=1, le=1000, description="Rejections per page (1-1000).", examples=[100])
    ] = 100,
    cursor: Annotated[
        str | None, Query(description="The `next` value of the previous page.", max_length=200)
    ] = None,
) -> RejectionPage:
    """Recent rejected messages of the lab with the reason, newest first; `next` pages back.

    Repeats of one reason on one topic within a minute are one row with a `count`.
    """
    before = None
    if cursor is not None:
        before = cursors.check_int(cursors.decode(cursor, int)[0], 2**63 - 1)
    cur = await conn.execute(
        "SELECT id, received_at, topic, device, reason, rejected_count, payload, payload_size, "
        "repeats, coalesce(last_received_at, received_at) "
        "FROM rejections WHERE lab = %(lab)s AND (%(before)s::bigint IS NULL OR id < %(before)s) "
        "ORDER BY id DESC LIMIT %(limit)s",
        {"lab": lab, "before": before, "limit": limit + 1},
    )
    rows = await cur.fetchall()
    next_cursor = cursors.encode(rows[limit - 1][0]) if len(rows) > limit else None
    return RejectionPage(
        data=[
            RejectionPublic(
                id=row[0],
                received_at=format_rfc3339(row[1]),
                topic=row[2],
                device=row[3],
                reason=row[4],
                rejected_count=row[5],
                payload=bytes(row[6]).decode("utf-8", "replace"),
                payload_size=row[7],
                count=row[8],
                last_received_at=format_rfc3339(row[9]),
            )
            for row in rows[:limit]
        ],
        next=next_cursor,
    )
