"""The vocabulary is the API's: one definition of the stages and channels."""

from __future__ import annotations

from nbo.core.vocabulary import CHANNELS, STAGES
from nbo.service.schemas import Channel


def test_stage_and_channel_names_match_the_api() -> None:
    assert set(CHANNELS) == {channel.value for channel in Channel}
    assert STAGES == ("new", "active", "at_risk", "lapsed", "loyal")
