import math

import pytest

from see.metrics import (auroc, average_performance, backward_transfer, diagonal_gap, exact_match, fallback_rate,
                         forgetting, forward_transfer, majority_answer, mean_and_spread, normalize_answer,
                         paired_difference, rouge_l, routing_accuracy, routing_confusion, tpr_at_fpr)

NAN = float("nan")

# R[i][j]: score on task j after training through task i (3 tasks), worked by hand below.
R = [
    [0.8, 0.1, 0.0],
    [0.6, 0.9, 0.2],
    [0.5, 0.7, 0.9],
]


def test_ap_is_the_mean_of_the_last_row():
    assert average_performance(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_bwt_by_hand():
    # j=0: 0.5-0.8 = -0.3 ; j=1: 0.7-0.9 = -0.2 ; mean -0.25
    assert backward_transfer(R) == pytest.approx(-0.25)


def test_fwt_by_hand_against_zero_shot():
    zero = [0.0, 0.05, 0.1]
    # j=1: R[0][1]-z1 = 0.1-0.05 = 0.05 ; j=2: R[1][2]-z2 = 0.2-0.1 = 0.1 ; mean 0.075
    assert forward_transfer(R, zero) == pytest.approx(0.075)


def test_forgetting_by_hand():
    # j=0: max(0.8, 0.6) - 0.5 = 0.3 ; j=1: max(0.1, 0.9) - 0.7 = 0.2 ; mean 0.25
    assert forgetting(R) == pytest.approx(0.25)


def test_single_task_stream():
    R1 = [[0.7]]
    assert average_performance(R1) == pytest.approx(0.7)
    assert backward_transfer(R1) is None
    assert forgetting(R1) is None
    assert forward_transfer(R1, [0.1]) is None


def test_missing_cells_are_skipped():
    Rm = [
        [0.8, None, NAN],
        [0.6, 0.9, 0.2],
        [NAN, 0.7, 0.9],
    ]
    assert average_performance(Rm) == pytest.approx(0.8)          # (0.7+0.9)/2
    assert backward_transfer(Rm) == pytest.approx(-0.2)           # only j=1: 0.7-0.9
    assert forgetting(Rm) == pytest.approx(0.2)                   # j=0 has no last cell; j=1: 0.9-0.7
    assert forward_transfer(Rm, [0.0, 0.0, 0.1]) == pytest.approx(0.1)  # j=1 missing; j=2: 0.2-0.1
    assert average_performance([]) is None
    assert average_performance([[None, NAN]]) is None


def test_exact_match_normalises_and_accepts_any_answer():
    assert normalize_answer("  The  Answer. ") == "the answer"
    assert exact_match("Positive.", ["positive"]) == 1.0
    assert exact_match("neg", ["positive", "negative"]) == 0.0
    assert exact_match("NEGATIVE", ["positive", "negative"]) == 1.0


@pytest.mark.parametrize("answers, expected", [
    (["NEG", "pos", "neg.", "Neg"], ("neg", 0.75)),     # normalised as exact match: 3 of 4 say neg
    (["a", "b", "a", "b"], ("b", 0.5)),                 # a tie goes to the larger string, whatever the order
    (["x", "y", "x", "x", "z", "x"], ("x", 4 / 6)),     # 3 distinct in 6: each twice on average, closed
    (["a", "b", "c", "a"], None),                       # 3 distinct in 4: open answers, no such bar
    (["tnuoc", "mttn", "ecno", "dlof"], None),          # every answer its own (a reversed word)
    ([], None),
])
def test_majority_answer_by_hand(answers, expected):
    got = majority_answer(answers)
    if expected is None:
        assert got is None
    else:
        assert got[0] == expected[0] and got[1] == pytest.approx(expected[1])


def test_rouge_l_takes_the_best_reference():
    assert rouge_l("the cat sat", ["the cat sat"]) == pytest.approx(1.0)
    # LCS "the cat" = 2 tokens; P = 2/2, R = 2/3 -> F = 0.8
    assert rouge_l("the cat", ["the cat sat", "dog"]) == pytest.approx(0.8)
    assert rouge_l("x", []) == 0.0


def test_routing_confusion_and_accuracy():
    true = ["a", "a", "b", "b", "b"]
    chosen = ["a", None, "b", "a", "b"]
    assert routing_confusion(true, chosen, ["a", "b"]) == [[1, 0, 1], [1, 2, 0]]
    assert routing_accuracy(true, chosen) == pytest.approx(3 / 5)
    assert fallback_rate(chosen) == pytest.approx(1 / 5)
    assert routing_accuracy([], []) is None
    with pytest.raises(ValueError):
        routing_confusion(["c"], ["a"], ["a", "b"])


def test_auroc_by_hand():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == pytest.approx(1.0)
    assert auroc([0.1], [0.9]) == pytest.approx(0.0)
    # pairs: (0.5 vs 0.5) tie = 0.5, (0.5 vs 0.2) = 1, (0.9 vs 0.5) = 1, (0.9 vs 0.2) = 1 -> 3.5 / 4
    assert auroc([0.5, 0.9], [0.5, 0.2]) == pytest.approx(0.875)
    assert auroc([], [0.1]) is None


@pytest.mark.parametrize("pos, neg, max_fpr, expected", [
    # 4 negatives at 25%: one may be flagged, so the threshold is the 2nd highest negative (0.5): 0.9, 0.8 pass
    ([0.9, 0.8, 0.3], [0.1, 0.2, 0.5, 0.7], 0.25, 2 / 3),
    # none may be flagged: strictly above the highest negative (0.7)
    ([0.9, 0.8, 0.3], [0.1, 0.2, 0.5, 0.7], 0.0, 2 / 3),
    # two may be flagged: strictly above 0.2, every positive
    ([0.9, 0.8, 0.3], [0.1, 0.2, 0.5, 0.7], 0.5, 1.0),
    # 5% of 4 negatives rounds down to none
    ([0.9, 0.8, 0.3], [0.1, 0.2, 0.5, 0.7], 0.05, 2 / 3),
    # tied negatives are flagged together: one allowed, but both sit at 0.5, so neither is; the tied positive too
    ([0.5, 0.6], [0.5, 0.5], 0.5, 1 / 2),
    # every negative may be flagged: every positive is
    ([0.0], [0.4, 0.9], 1.0, 1.0),
    ([], [0.1], 0.05, None),
])
def test_tpr_at_fpr_by_hand(pos, neg, max_fpr, expected):
    got = tpr_at_fpr(pos, neg, max_fpr)
    assert got == (None if expected is None else pytest.approx(expected))


def test_tpr_at_fpr_rejects_a_rate_outside_0_1():
    with pytest.raises(ValueError):
        tpr_at_fpr([0.1], [0.2], 5.0)


def test_mean_and_spread():
    mu, sd = mean_and_spread([1.0, 2.0, 3.0])
    assert mu == pytest.approx(2.0) and sd == pytest.approx(1.0)
    assert mean_and_spread([0.5]) == (0.5, 0.0)
    assert mean_and_spread([None, NAN]) == (None, None)
    assert math.isclose(mean_and_spread([None, 2.0, 4.0])[0], 3.0)


def test_diagonal_gap_by_hand():
    see = [[0.9, None], [0.8, 0.5]]
    oracle = [[1.0, None], [1.0, 0.7]]
    gap = diagonal_gap(see, oracle)
    assert gap[0] == pytest.approx(-0.1) and gap[1] == pytest.approx(-0.2)
    # a missing diagonal cell on either side gives None, not a number
    assert diagonal_gap([[0.9, None], [0.8, None]], oracle) == [pytest.approx(-0.1), None]


def test_paired_difference_by_hand():
    a, b = [1, 1, 0, 0], [0, 1, 0, 1]
    r = paired_difference(a, b)
    # d = [1, 0, 0, -1]: mean 0, sample sd sqrt(2/3), se sqrt(2/3)/2
    assert r["mean"] == 0 and r["n"] == 4
    assert r["half_width"] == pytest.approx(1.96 * math.sqrt(2 / 3) / 2)
    r = paired_difference([1, 1, 1], [0, 0, 0])
    assert r == {"mean": 1.0, "half_width": 0.0, "n": 3}
    assert paired_difference([], []) is None
    with pytest.raises(ValueError, match="same queries"):
        paired_difference([1, 0], [1])
