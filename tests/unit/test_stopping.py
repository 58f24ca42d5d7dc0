"""How a command reads stop signals (`stream.stopping`): the first drains, a second forces."""

from __future__ import annotations

import signal
import threading

import pytest

from stream.stopping import ForcedStop, StopRequested, StopSignals, exit_code


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_signal_while_playing_asks_for_a_drain_and_raises_nothing():
    calls: list[str] = []
    signals = StopSignals(clock=Clock(), forced_exit_s=None)
    with signals.notify(lambda: calls.append("drain")):
        signals.handle(signal.SIGTERM)
    assert calls == ["drain"] and signals.requested and signals.forced is None


def test_first_signal_during_start_up_unwinds_with_exit_0():
    signals = StopSignals(clock=Clock(), forced_exit_s=None)
    with pytest.raises(StopRequested) as stopped:
        signals.handle(signal.SIGTERM)
    assert exit_code(stopped.value) == 0


@pytest.mark.parametrize(
    ("first", "second"), [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)]
)
def test_a_second_signal_forces_the_stop_with_128_plus_its_number(first: int, second: int):
    clock = Clock()
    signals = StopSignals(clock=clock, forced_exit_s=None)
    with signals.notify(lambda: None):
        signals.handle(first)
        clock.now += 1.0
        with pytest.raises(ForcedStop) as forced:
            signals.handle(second)
    assert exit_code(forced.value) == 128 + second
    signals.handle(signal.SIGTERM)  # a third one: the forced clean-up runs on, undisturbed


def test_the_same_signal_again_at_once_is_the_same_request():
    clock = Clock()
    signals = StopSignals(clock=clock, forced_exit_s=None)
    with signals.notify(lambda: None):
        signals.handle(signal.SIGINT)
        clock.now += 0.2  # one Ctrl-C delivered twice (directly and through the process group)
        signals.handle(signal.SIGINT)
        assert signals.forced is None
        clock.now += 1.5
        with pytest.raises(ForcedStop):
            signals.handle(signal.SIGINT)


def test_a_callback_bound_after_the_signal_runs_at_once():
    signals = StopSignals(clock=Clock(), forced_exit_s=None)
    with signals.notify(lambda: None):
        signals.handle(signal.SIGTERM)
    calls: list[str] = []
    with signals.notify(lambda: calls.append("drain")):
        assert calls == ["drain"]


def test_a_keyboard_interrupt_from_elsewhere_exits_130():
    assert exit_code(KeyboardInterrupt()) == 130


def test_a_forced_stop_whose_clean_up_hangs_still_ends_the_process():
    exited: list[int] = []
    done = threading.Event()
    signals = StopSignals(
        clock=Clock(), forced_exit_s=0.05, exit_process=lambda code: (exited.append(code), done.set())
    )
    with signals.notify(lambda: None):
        signals.handle(signal.SIGINT)
        with pytest.raises(ForcedStop):
            signals.handle(signal.SIGTERM)
    assert done.wait(10), "the forced stop's deadline never fired"
    assert exited == [143]
