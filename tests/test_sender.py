"""The sender and its outbox: how long a flood limit pauses sending, and a row claimed once across processes."""

from __future__ import annotations

import time
from datetime import timedelta

from bot.chat.sender import retry_seconds
from bot.db.outbox import claim, due, record_sent
from bot.pipeline.decide import Decider
from tests.fakes.incidents import feed


def test_a_flood_limit_is_read_in_seconds_or_as_a_timedelta() -> None:
    assert retry_seconds(3) == 3.0
    assert retry_seconds(timedelta(seconds=42)) == 42.0


def test_a_notice_another_process_sent_after_this_one_read_it_is_not_claimed_again(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    read_here = [notice.id for notice, _, _ in due(time.time())]  # this process reads the outbox...
    for notice_id in read_here:  # ...while another one claims, sends and records every row
        assert claim(notice_id, True)
        record_sent(notice_id, 100 + notice_id, 1, time.time())

    assert read_here and not any(claim(notice_id, True) for notice_id in read_here)
