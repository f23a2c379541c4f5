"""Send a rejected message to the dead-letter topic, and wait until the broker has it."""

from __future__ import annotations

import logging
import time
from typing import Any

from ltrr.agents.metrics import DLQ_EVENTS
from ltrr.schemas.codec import dumps
from ltrr.schemas.dead_letter import REASON_HEADER, dead_letter
from ltrr.schemas.validation import Rejection

log = logging.getLogger(__name__)

#: Envelope overhead allowance: base64 grows bytes by 4/3, plus the JSON around them.
_ENVELOPE_SLACK = 64 * 1024


async def send_dead_letter(
    dlq_topic: Any,
    logical_topic: str,
    message: Any,
    rejection: Rejection,
    *,
    max_message_bytes: int,
) -> None:
    """Publish the DeadLetter v1 envelope of ``message`` and await the broker's ack.

    Awaiting the ack before the source offset can be committed is what makes the dead-letter
    path lose nothing when the worker dies right after rejecting a message.
    """
    letter = dead_letter(
        rejection,
        message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=None if message.timestamp is None else int(message.timestamp * 1000),
        key=message.key,
        now_ms=int(time.time() * 1000),
        max_original_bytes=max(1, (max_message_bytes - _ENVELOPE_SLACK) * 3 // 4),
    )
    fut = await dlq_topic.send(
        key=message.key,
        value=dumps(letter),
        headers=[(REASON_HEADER, rejection.reason.encode())],
    )
    await fut
    DLQ_EVENTS.labels(message.topic, rejection.reason).inc()
    log.warning(
        "dead-lettered %s[%d]@%d: %s (%s)",
        message.topic,
        message.partition,
        message.offset,
        rejection.reason,
        rejection.detail,
    )
