"""The learning sample: a uniform reservoir that decides in advance which events it keeps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sentinel.anomaly.features import N_FEATURES
from sentinel.anomaly.state import RowSample

ROW = [0.0] * N_FEATURES


def _fill(sample: RowSample, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        sample.add(ROW, i + 1, ((0, "exe", "", f"/bin/{i}"),))


def test_every_event_has_the_same_chance_to_be_kept() -> None:
    kept: Counter[int] = Counter()
    runs, capacity, events = 400, 20, 400
    for seed in range(runs):
        sample = RowSample(capacity, seed=seed)
        _fill(sample, events)
        assert sample.size == capacity and sample.seen == events
        kept.update(wall for _, wall, _, _ in sample.rows)
    expected = runs * capacity / events  # 20 per event
    # Early, middle and late events alike (a skip drawn wrongly favours one end of the stream).
    for part in (range(1, 101), range(151, 251), range(301, 401)):
        mean = sum(kept[i] for i in part) / len(part)
        assert abs(mean - expected) < 0.1 * expected, (part, mean)


def test_events_it_passes_over_are_counted_without_a_row() -> None:
    sample = RowSample(10, seed=1)
    _fill(sample, 10)
    passed = 0
    for _ in range(10_000):
        if sample.due():
            sample.add(ROW, 1)
        else:
            sample.pass_over()
            passed += 1
    assert sample.seen == 10_010 and sample.size == 10
    assert passed > 9_800  # about k·ln(n/k) ≈ 70 of 10,000 are kept


def test_a_loaded_sample_goes_on_keeping_events_uniformly(tmp_path: Path) -> None:
    late: list[int] = []
    for seed in range(200):
        sample = RowSample(20, seed=seed)
        _fill(sample, 200)
        path = tmp_path / f"s{seed}"
        path.write_bytes(sample.to_bytes())
        again = RowSample.load(path, 20)
        assert again.seen == 200 and again.size == 20
        _fill(again, 200, start=200)  # as many again: each later event kept with chance 20/400
        late.append(sum(1 for _, wall, _, _ in again.rows if wall > 200))
    mean = sum(late) / len(late)
    assert 8.5 < mean < 11.5, mean  # half the rows from the second half


def test_a_sample_loaded_into_a_larger_capacity_fills_up_first(tmp_path: Path) -> None:
    sample = RowSample(5, seed=0)
    _fill(sample, 50)
    path = tmp_path / "s"
    path.write_bytes(sample.to_bytes())
    again = RowSample.load(path, 8)
    _fill(again, 3, start=50)
    assert again.size == 8 and again.seen == 53
