"""The replay table of `python -m bot.replay`: histories through the bot's own decisions, held to their targets."""

from __future__ import annotations

import pandas as pd
import pytest

from bot.replay import STORIES, replay, report
from ml.training import train


@pytest.mark.slow
def test_every_developing_problem_alerts_in_time_and_no_healthy_pattern_alerts_once_learnt() -> None:
    outcomes = replay(train(pd.DataFrame()).pipeline)
    table = report(outcomes)

    assert [o.story.name for o in outcomes] == [s.name for s in STORIES]
    for outcome in outcomes:
        if outcome.story.developing:
            assert outcome.lead_min is not None and outcome.lead_min >= outcome.story.lead_target_min, table
            assert outcome.early == 0, table
        else:
            assert outcome.week(1) == 0, table
    assert table.endswith(f"all {len(STORIES)} replays hold")
