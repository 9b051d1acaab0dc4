"""Metrics, each a pure function defined once.

Continual-learning metrics take the accuracy matrix ``R`` where ``R[i][j]`` is
the score on task ``j`` after training through task ``i`` (0-based here; the
report writes them 1-based). Missing cells are ``None`` or NaN and are
skipped; a metric with no cell to average returns ``None``.
"""
from __future__ import annotations

import math
import re
import string
from typing import Iterable, Sequence

Matrix = Sequence[Sequence[float | None]]


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and extra whitespace (SQuAD/SuperNI style, articles kept)."""
    text = text.lower().strip()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return re.sub(r"\s+", " ", text).strip()


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the prediction equals any acceptable answer after normalisation."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


_ROUGE = None


def rouge_l(prediction: str, answers: Iterable[str]) -> float:
    """Best ROUGE-L F1 over the acceptable answers (``rouge-score`` library)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return max((_ROUGE.score(a, prediction)["rougeL"].fmeasure for a in answers), default=0.0)


SCORERS = {"exact_match": exact_match, "rouge_l": rouge_l}


def majority_answer(answers: Sequence[str]) -> tuple[str, float] | None:
    """The commonest answer (normalised as exact match does) and its share, when the answers form a closed set.

    Closed: on average each distinct answer occurs at least twice, as the labels of a classification do.
    There, always giving the commonest answer scores its share without reading the query, so a learner
    must beat that share, not just the base model's zero-shot score (0% when the base does not know the
    label words). Open answers (a reversed word, a sum) have no such bar: ``None``.
    """
    if not answers:
        return None
    counts: dict[str, int] = {}
    for a in answers:
        key = normalize_answer(a)
        counts[key] = counts.get(key, 0) + 1
    if 2 * len(counts) > len(answers):
        return None
    top = max(counts, key=lambda k: (counts[k], k))
    return top, counts[top] / len(answers)


def score_answers(answers: Sequence[str], examples: Sequence, metric: str) -> list[float]:
    """Each answer's score against its example's acceptable ``outputs``."""
    score = SCORERS[metric]
    return [score(a, ex.outputs) for a, ex in zip(answers, examples)]


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if _ok(v)]
    return sum(vals) / len(vals) if vals else None


def _cell(R: Matrix, i: int, j: int) -> float | None:
    try:
        v = R[i][j]
    except IndexError:
        return None
    return v if _ok(v) else None


def average_performance(R: Matrix) -> float | None:
    """AP: mean of the last row (every task after training on all of them)."""
    if not R:
        return None
    return _mean(R[-1])


def backward_transfer(R: Matrix) -> float | None:
    """BWT: mean over j < T of R[T][j] - R[j][j]. None for T = 1."""
    T = len(R)
    diffs = []
    for j in range(T - 1):
        a, b = _cell(R, T - 1, j), _cell(R, j, j)
        if a is not None and b is not None:
            diffs.append(a - b)
    return _mean(diffs)


def forward_transfer(R: Matrix, zero_shot: Sequence[float | None]) -> float | None:
    """FWT: mean over j >= 1 of R[j-1][j] - zero_shot[j] (the base model's score on task j)."""
    T = len(R)
    diffs = []
    for j in range(1, T):
        a = _cell(R, j - 1, j)
        b = zero_shot[j] if j < len(zero_shot) and _ok(zero_shot[j]) else None
        if a is not None and b is not None:
            diffs.append(a - b)
    return _mean(diffs)


def forgetting(R: Matrix) -> float | None:
    """Mean over j < T of (max over i < T of R[i][j]) - R[T][j]."""
    T = len(R)
    drops = []
    for j in range(T - 1):
        last = _cell(R, T - 1, j)
        best = [v for v in (_cell(R, i, j) for i in range(T - 1)) if v is not None]
        if last is not None and best:
            drops.append(max(best) - last)
    return _mean(drops)


#: How routing counts and reports write the fallback where an expert name would be.
FALLBACK = "<fallback>"


def routing_confusion(true_tasks: Sequence[str], chosen: Sequence[str | None], labels: Sequence[str]
                      ) -> list[list[int]]:
    """Counts C[t][c]: queries of task labels[t] sent to labels[c]; the last column is the fallback (None)."""
    index = {name: k for k, name in enumerate(labels)}
    C = [[0] * (len(labels) + 1) for _ in labels]
    for t, c in zip(true_tasks, chosen):
        if t not in index:
            raise ValueError(f"unknown true task {t!r}")
        col = len(labels) if c is None else index.get(c)
        if col is None:
            raise ValueError(f"unknown chosen expert {c!r}")
        C[index[t]][col] += 1
    return C


def answer_confusion(gold: Sequence[str], answers: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Counts C[g][a]: queries whose gold answer is labels[g] answered labels[a], both compared as exact match
    compares them (``normalize_answer``); the last column counts answers that are none of the labels."""
    index = {normalize_answer(name): k for k, name in enumerate(labels)}
    C = [[0] * (len(labels) + 1) for _ in labels]
    for g, a in zip(gold, answers, strict=True):
        row = index.get(normalize_answer(g))
        if row is None:
            raise ValueError(f"gold answer {g!r} is not one of the labels")
        C[row][index.get(normalize_answer(a), len(labels))] += 1
    return C


def routing_accuracy(true_tasks: Sequence[str], chosen: Sequence[str | None]) -> float | None:
    """Share of queries answered by their own task's expert."""
    if not true_tasks:
        return None
    return sum(t == c for t, c in zip(true_tasks, chosen)) / len(true_tasks)


def fallback_rate(chosen: Sequence[str | None]) -> float | None:
    """Share of queries that reached the fallback (None). On OOD queries this is the TPR; on
    in-distribution queries it is the FPR."""
    if not chosen:
        return None
    return sum(c is None for c in chosen) / len(chosen)


def auroc(scores_pos: Sequence[float], scores_neg: Sequence[float]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count half.

    For OOD detection the positives are the OOD queries and the score is
    ``1 - max P(<<pos>>)`` over experts (an OOD query should look unlike every task).
    """
    if not scores_pos or not scores_neg:
        return None
    ranked = sorted([(s, 1) for s in scores_pos] + [(s, 0) for s in scores_neg])
    # rank-sum (Mann-Whitney U) with average ranks for ties
    rank_sum, k = 0.0, 0
    while k < len(ranked):
        m = k
        while m + 1 < len(ranked) and ranked[m + 1][0] == ranked[k][0]:
            m += 1
        avg_rank = (k + m) / 2 + 1
        rank_sum += avg_rank * sum(lbl for _, lbl in ranked[k:m + 1])
        k = m + 1
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def tpr_at_fpr(scores_pos: Sequence[float], scores_neg: Sequence[float], max_fpr: float) -> float | None:
    """The largest share of positives that one threshold flags while it flags at most ``max_fpr`` of the negatives.

    A query is flagged when its score is strictly above the threshold, so tied negatives are flagged or spared
    together. For OOD detection the positives are the OOD queries and the score says "unlike every task"; the
    threshold is chosen on the very scores it is judged on, so this is the best any threshold could do (a
    threshold-free figure, like AUROC), not what a deployed threshold achieves.
    """
    if not scores_pos or not scores_neg:
        return None
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    allowed = math.floor(max_fpr * len(scores_neg) + 1e-9)
    if allowed >= len(scores_neg):
        return 1.0
    # flagging strictly above the (allowed+1)-th highest negative flags at most `allowed` negatives; any lower
    # threshold would flag that negative too
    threshold = sorted(scores_neg, reverse=True)[allowed]
    return sum(s > threshold for s in scores_pos) / len(scores_pos)


def diagonal_gap(R_a: Matrix, R_b: Matrix) -> list[float | None]:
    """R_a[j][j] - R_b[j][j] per task: how much worse (negative) method a answers task j, right after learning
    it, than method b. SEE against the oracle separates what routing costs (it is in the AP) from what the
    expert itself answers worse than a plain LoRA on the same examples."""
    n = max(len(R_a), len(R_b))
    out = []
    for j in range(n):
        a, b = _cell(R_a, j, j), _cell(R_b, j, j)
        out.append(None if a is None or b is None else a - b)
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = 1.96) -> dict | None:
    """Mean of a[k] - b[k] over the same queries, and the half-width of its normal-approximation confidence
    interval (z times the standard error of the per-query differences; z=1.96 for 95%). Pairing by query
    removes the test set's difficulty from the comparison, so the interval is much narrower than the one
    from two independent means."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same queries: {len(a)} vs {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    if not d:
        return None
    mu, sd = mean_and_spread(d)
    return {"mean": mu, "half_width": z * sd / math.sqrt(len(d)), "n": len(d)}


def mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation over seeds (spread 0.0 for a single value)."""
    vals = [v for v in values if _ok(v)]
    if not vals:
        return None, None
    mu = sum(vals) / len(vals)
    if len(vals) == 1:
        return mu, 0.0
    return mu, math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))
