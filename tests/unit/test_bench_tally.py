"""The benchmarks' message counts: ranges, lost, repeats, and the exit status they give."""

from __future__ import annotations

import pytest

from scripts.benchkit.tally import Ledger, Tally, from_ranges, to_ranges


def test_ranges_round_trip_and_stay_short_for_runs() -> None:
    numbers = {0, 1, 2, 3, 7, 8, 10}
    assert to_ranges(numbers) == [[0, 4], [7, 9], [10, 11]]
    assert from_ranges(to_ranges(numbers)) == numbers
    assert to_ranges(range(100_000)) == [[0, 100_000]]
    assert to_ranges([]) == []


def tally(acked: range, received: list[int], unmarked: int = 0) -> Tally:
    t = Tally()
    t.add_producer({"sent": len(acked) + 1, "acked": to_ranges(acked)})
    t.add_consumer(
        {"received": to_ranges(received), "deliveries": len(received), "unmarked": unmarked}
    )
    return t


def test_lost_is_acknowledged_and_never_received() -> None:
    t = tally(range(10), [0, 1, 2, 4, 5, 6, 7, 8, 9, 42])
    assert t.lost == 1  # 3; 42 was received but not acked (its send failed): not lost
    assert not t.ok


def test_repeats_count_every_second_delivery_and_unmarked_ones_fail() -> None:
    t = tally(range(3), [0, 1, 1, 2, 2])
    assert (t.lost, t.repeats, t.unmarked) == (0, 2, 0)
    assert t.ok
    assert not tally(range(3), [0, 1, 1, 2], unmarked=1).ok


def test_a_backlog_left_in_place_is_not_lost() -> None:
    t = tally(range(10), [0, 1, 2])
    t.left = set(range(3, 10))
    assert t.lost == 0


@pytest.mark.parametrize(
    ("runs", "status", "last"),
    [
        ([tally(range(5), [0, 1, 2, 3, 4])], 0, "lost 0 unmarked 0"),
        ([tally(range(5), [0, 1, 2, 3, 4]), tally(range(5), [0, 1])], 1, "lost 3 unmarked 0"),
        ([tally(range(2), [0, 1, 1], unmarked=1)], 1, "lost 0 unmarked 1"),
    ],
)
def test_the_ledger_fails_the_benchmark_on_any_loss_or_unmarked_repeat(
    runs: list[Tally], status: int, last: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger()
    for i, t in enumerate(runs):
        ledger.record(f"run {i}", t)
    assert ledger.finish() == status
    assert capsys.readouterr().out.splitlines()[-1] == last
