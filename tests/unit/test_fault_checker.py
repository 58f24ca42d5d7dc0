from tests.faults.checker import check


def test_checker_counts_loss_duplicates_and_dead_letters():
    sent = [("a", i) for i in range(10)]
    results = [("a", i) for i in range(7)] + [("a", 3), ("a", 3)]
    out = check("x", sent, results, dead_lettered=[("a", 8)])
    assert (out.frames, out.results, out.lost, out.duplicates, out.dead_lettered) == (10, 7, 2, 2, 1)


def test_checker_reports_zero_loss_only_when_everything_arrived():
    sent = [("a", i) for i in range(5)]
    assert check("x", sent, sent).lost == 0
    assert check("x", sent, sent[:-1]).lost == 1
