from tests.faults.checker import check, label_changes, sequence_differences


def test_checker_counts_loss_duplicates_and_dead_letters():
    sent = [("a", i) for i in range(10)]
    results = [("a", i) for i in range(7)] + [("a", 3), ("a", 3)]
    out = check("x", sent, results, dead_lettered=[("a", 8)])
    assert (out.frames, out.results, out.lost, out.duplicates, out.dead_lettered) == (10, 7, 2, 2, 1)


def test_checker_reports_zero_loss_only_when_everything_arrived():
    sent = [("a", i) for i in range(5)]
    assert check("x", sent, sent).lost == 0
    assert check("x", sent, sent[:-1]).lost == 1


def test_sequence_differences_names_each_seq_that_differs_or_is_missing() -> None:
    ref = {"a": {0: "cat", 1: "cat", 2: "dog"}, "b": {0: "x"}}
    assert sequence_differences(ref, ref) == {}
    got = {"a": {0: "cat", 1: "dog", 3: "dog"}, "c": {0: "y"}}
    assert sequence_differences(ref, got) == {"a": [1, 2, 3], "b": [0], "c": [0]}
    assert label_changes({2: "dog", 0: "cat", 1: "cat", 3: "cat"}) == 2
    assert label_changes({}) == 0
