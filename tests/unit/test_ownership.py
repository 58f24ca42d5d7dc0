"""Fair shares among replicas (partitions among postprocess replicas, sources among ingest
replicas): nobody holds more than ceil(items / members), a newcomer gets free items, and replicas
deciding alone end up owning every item exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.ownership import fair_share, preference, rebalance


def test_fair_share_is_the_ceiling() -> None:
    assert [fair_share(3, n) for n in (0, 1, 2, 3, 4)] == [3, 3, 2, 1, 1]
    assert fair_share(8, 3) == 3
    assert fair_share(0, 2) == 0  # no sources yet
    with pytest.raises(ValueError, match="items must be >= 0, got -1"):
        fair_share(-1, 1)


def test_one_replica_takes_every_free_partition() -> None:
    assert rebalance(range(3), ["a"], "a", set(), {0, 1, 2}).take == [0, 1, 2]


def test_a_replica_over_its_share_gives_the_excess_up_and_newcomers_take_it() -> None:
    members = ["a", "b", "c"]
    plan = rebalance(range(3), members, "a", {0, 1, 2}, set())
    assert plan.take == [] and len(plan.give_up) == 2
    kept = {0, 1, 2} - set(plan.give_up)
    free = set(plan.give_up)
    b = rebalance(range(3), members, "b", set(), free)
    c = rebalance(range(3), members, "c", set(), free)
    assert len(b.take) == len(c.take) == 1 and set(b.take) != set(c.take)  # different starts
    assert kept | set(b.take) | set(c.take) == {0, 1, 2}


def test_a_member_missing_from_the_list_counts_itself() -> None:
    assert rebalance(range(4), ["b"], "a", set(), {0, 1, 2, 3}).take != []
    assert preference(range(4), [], "a") == [0, 1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(
    partitions=st.integers(1, 12),
    members=st.integers(1, 6),
    start=st.lists(st.integers(0, 5), max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_replicas_deciding_alone_converge_to_every_partition_owned_once_within_the_share(
    partitions: int, members: int, start: list[int], order
) -> None:
    """Any starting ownership (some partitions free), members acting in any order, each step
    one member's whole plan, and a take succeeding only when the partition is free (a lease):
    after a few rounds every partition has one owner and none holds more than its share."""
    names = [f"r{i}" for i in range(members)]
    owner: dict[int, str] = {p: names[m % members] for p, m in enumerate(start[:partitions])}
    for _ in range(4):
        for name in order.sample(names, len(names)):
            mine = {p for p, o in owner.items() if o == name}
            free = {p for p in range(partitions) if p not in owner}
            plan = rebalance(range(partitions), names, name, mine, free)
            for p in plan.give_up:
                del owner[p]
            for p in plan.take:
                owner.setdefault(p, name)  # SET NX: the first one wins
    share = fair_share(partitions, members)
    assert sorted(owner) == list(range(partitions))
    assert all(sum(1 for o in owner.values() if o == n) <= share for n in names)


def test_sources_are_shared_like_partitions() -> None:
    sources = [f"cam-{i:02d}" for i in range(12)]
    a = rebalance(sources, ["a", "b"], "a", set(sources), set())
    assert len(a.give_up) == 6 and a.take == []
    b = rebalance(sources, ["a", "b"], "b", set(), set(a.give_up))
    assert sorted(b.take) == sorted(a.give_up)


def test_an_owned_item_that_is_gone_does_not_count() -> None:
    plan = rebalance(["x", "y"], ["a", "b"], "a", {"gone", "x"}, {"y"})
    assert plan == rebalance(["x", "y"], ["a", "b"], "a", {"x"}, {"y"})
    assert rebalance([], ["a"], "a", {"gone"}, set()).take == []
