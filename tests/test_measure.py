"""core.measure's side-by-side rounds: every name once a round, in orders that change between
rounds, each metric's values kept per name in round order."""

from seqbench.core.measure import alternating_rounds


def test_alternating_rounds_take_every_name_once_a_round_in_shuffled_orders():
    calls = []

    def measure(name):
        calls.append(name)
        return {"ms": float(len(calls)), "other": 0.0}

    times = alternating_rounds(["a", "b", "c"], 6, measure)
    rounds = [calls[i:i + 3] for i in range(0, 18, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # not one fixed order
    for name in "abc":
        assert times[name]["other"] == [0.0] * 6
        assert times[name]["ms"] == [float(i + 1) for i, n in enumerate(calls) if n == name]
