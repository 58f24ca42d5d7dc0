"""How dead letters are named and aged on the command line (pure parts of `framestream dead`)."""

from __future__ import annotations

import pytest

from stream.adapters.redis.dead_letters import parse_ref
from stream.commands.dead import format_age


def test_a_dead_letter_is_named_by_partition_and_entry_id_or_the_bare_entry_id() -> None:
    assert parse_ref("3:1764495011234-0") == (3, "1764495011234-0")
    assert parse_ref(" 1764495011234-7 ") == (None, "1764495011234-7")


@pytest.mark.parametrize(
    "bad", ["", "nonsense", "1764495011234", "x:1-0", "1:1-", "-1:1-0", "1:a-0", "1:2:3-0"]
)
def test_a_malformed_name_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="expected <partition>:<ms>-<seq>"):
        parse_ref(bad)


def test_ages_are_short_and_never_cut() -> None:
    assert [format_age(s) for s in (0, 42.9, 89, 90, 3599, 5400, 7 * 3600, 36 * 3600, 9 * 86400)] == [
        "0s", "42s", "89s", "1m", "59m", "1h", "7h", "1d", "9d",
    ]  # fmt: skip
