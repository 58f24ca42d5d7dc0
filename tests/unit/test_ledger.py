"""The sink's ledger (pure): duplicates found in bounded memory, end-of-stream, counts, latency."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.core.ledger import ResultLedger, SeqSet
from stream.core.messages import EOS, RESULT


def result(seq: int, latency_ms: float = 1.0, **extra: object) -> dict[str, object]:
    return {"kind": RESULT, "source": "s", "model": "m", "seq": seq, "latency_ms": latency_ms, **extra}


@given(st.lists(st.integers(0, 3_000), max_size=3_000))
def test_each_seq_counts_once_and_every_repeat_is_a_duplicate(seqs: list[int]) -> None:
    ledger = ResultLedger()
    fresh = [ledger.record(result(seq)) for seq in seqs]
    track = ledger.track("s", "m")
    assert track.results == sum(fresh) == len(set(seqs))
    assert track.duplicates == len(seqs) - len(set(seqs))


@given(st.lists(st.integers(0, 30), min_size=300, max_size=300))
def test_out_of_order_within_the_window_is_exact(jitter: list[int]) -> None:
    """Frames arrive out of order by up to 30 places (parallel inference reorders them)."""
    order = sorted(range(300), key=lambda seq: seq + jitter[seq])
    seen = SeqSet(window=64)
    for seq in order:
        assert seen.add(seq)
        assert len(seen.above) <= 64
    assert seen.floor == 299 and not seen.above  # no gap is left
    assert not any(seen.add(seq) for seq in order)


def test_a_long_run_with_gaps_keeps_a_bounded_window() -> None:
    """A live source drops frames: the gaps never fill, yet memory stays at most `window` seqs."""
    seen = SeqSet(window=100)
    for seq in range(0, 1_000_000, 3):
        seen.add(seq)
    assert len(seen.above) <= 100
    assert 999_999 in seen and not seen.add(999_999)


def test_rereads_are_not_duplicates_and_other_kinds_are_ignored() -> None:
    ledger = ResultLedger()
    assert ledger.record(result(0))
    assert not ledger.record(result(0), reread=True)
    assert not ledger.record({"kind": "label_change", "source": "s", "model": "m", "seq": 1})
    assert not ledger.record(result("x"))  # type: ignore[arg-type]
    assert ledger.track("s", "m").duplicates == 0


def test_end_of_stream_completion_counts_skipped_frames() -> None:
    ledger = ResultLedger()
    for seq in (0, 1, 3):
        ledger.record(result(seq))
    ledger.record({"kind": EOS, "source": "s", "model": "m", "frames": 4, "skipped": 0})
    assert ledger.finished([("s", "m")]) and not ledger.complete([("s", "m")])
    ledger.record({"kind": EOS, "source": "s", "model": "m", "frames": 4, "skipped": 1})
    assert ledger.complete([("s", "m")])


def test_totals_sum_tracks_and_the_mean_batch_is_per_batch() -> None:
    ledger = ResultLedger()
    ledger.record(result(0, 10.0, batch_size=1))
    for seq in range(1, 5):  # one batch of 4
        ledger.record(result(seq, 20.0, batch_size=4))
    ledger.record({**result(0, 30.0), "source": "t", "smoothed_label": "cat"})
    total = ledger.total()
    assert total.results == 6 and total.latency.count == 6
    assert total.latency.percentile(100) == 30.0
    assert ledger.track("s", "m").mean_batch_size == 2.5  # 5 frames in 2 batches
    assert ledger.track("t", "m").label == "cat"
    assert ledger.sources == ["s", "t"]
