"""Metrics (SPEC section 1, shot groups) against independent loop computations."""
import json
import math

import numpy as np
import pytest
import torch

from longtail.metrics import (
    evaluate,
    expected_calibration_error,
    group_accuracies,
    mean_confidence,
    per_class_accuracy,
    shot_groups,
    top1,
)


def _data(n=60, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    z[torch.arange(n), y] += 1.0  # better than chance, not perfect
    return z, y


def _loop_per_class(preds, targets, c):
    out = []
    for j in range(c):
        idx = [i for i in range(len(targets)) if targets[i] == j]
        out.append(None if not idx else 100.0 * sum(preds[i] == j for i in idx) / len(idx))
    return out


def test_top1_logits_and_preds():
    z, y = _data()
    preds = z.argmax(1).tolist()
    expected = 100.0 * sum(p == t for p, t in zip(preds, y.tolist())) / len(preds)
    assert top1(z, y) == pytest.approx(expected)
    assert top1(z.argmax(1), y) == pytest.approx(expected)
    assert 0 < expected < 100
    assert top1(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) is None


def test_per_class_accuracy_with_absent_class():
    z, y = _data(40, 6, seed=1)
    y[y == 4] = 2  # class 4 absent from the targets
    got = per_class_accuracy(z.argmax(1), y, 6)
    expected = _loop_per_class(z.argmax(1).tolist(), y.tolist(), 6)
    assert expected[4] is None and math.isnan(got[4])
    for g, e in zip(got.tolist(), expected):
        assert (e is None and math.isnan(g)) or g == pytest.approx(e)
    assert torch.equal(per_class_accuracy(z, y, 6).nan_to_num(-1), got.nan_to_num(-1))  # logits form


def test_shot_groups_boundaries_and_loop():
    counts = [500, 101, 100, 99, 20, 19, 1, 0, 250, 20]
    groups = shot_groups(counts)
    for j, n in enumerate(counts):
        name = "many" if n > 100 else ("few" if n < 20 else "medium")
        for g in ("many", "medium", "few"):
            assert bool(groups[g][j]) == (g == name), (j, n, g)
    custom = shot_groups(counts, many=50, few=5)
    assert custom["many"].tolist() == [n > 50 for n in counts]
    assert custom["few"].tolist() == [n < 5 for n in counts]


def test_imagenet_lt_group_sizes(shared_data):
    path = shared_data / "splits" / "ImageNet_LT" / "ImageNet_LT_train_class_counts.json"
    counts = json.loads(path.read_text())
    assert len(counts) == 1000 and sum(counts) == 115846  # SPEC: ImageNet-LT train size
    groups = shot_groups(counts)
    by_loop = (sum(n > 100 for n in counts), sum(20 <= n <= 100 for n in counts), sum(n < 20 for n in counts))
    got = tuple(int(groups[g].sum()) for g in ("many", "medium", "few"))
    assert got == by_loop
    assert got == (385, 479, 136)  # the sizes reported throughout the ImageNet-LT literature


def test_group_accuracies_means_and_none():
    per_class = torch.tensor([80.0, float("nan"), 40.0, 10.0, 30.0, float("nan")], dtype=torch.float64)
    counts = [300, 200, 50, 60, 5, 3]  # many: 0,1  medium: 2,3  few: 4,5
    got = group_accuracies(per_class, counts)
    assert got == {"many": pytest.approx(80.0), "medium": pytest.approx(25.0), "few": pytest.approx(30.0)}
    # few group whose classes have no test samples -> None; empty many group -> None
    got = group_accuracies(torch.tensor([float("nan"), 50.0, float("nan")]), [5, 50, 2])
    assert got == {"many": None, "medium": pytest.approx(50.0), "few": None}
    with pytest.raises(ValueError, match="train_counts"):
        group_accuracies(per_class, counts[:4])


def _ece_loop(p, y, n_bins):
    n = len(y)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if lo < max(p[i]) <= hi]
        if members:
            conf = sum(max(p[i]) for i in members) / len(members)
            acc = sum(int(np.argmax(p[i]) == y[i]) for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return 100.0 * total


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_loop(n_bins):
    z, y = _data(200, 4, seed=2)
    p = torch.softmax(z.double(), 1)
    expected = _ece_loop(p.tolist(), y.tolist(), n_bins)
    assert expected > 0
    assert expected_calibration_error(z, y, n_bins) == pytest.approx(expected, rel=1e-9)
    assert expected_calibration_error(p, y, n_bins) == pytest.approx(expected, rel=1e-9)  # probabilities detected
    assert expected_calibration_error(p, y, n_bins, from_logits=False) == pytest.approx(expected, rel=1e-9)


def test_ece_simple_cases():
    y = torch.tensor([0, 0, 1, 1])
    # confidence 0.9 everywhere, 3 of 4 right: |0.75 - 0.9| = 15 %
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    assert expected_calibration_error(p, y) == pytest.approx(15.0)
    # confidence exactly on a bin edge (0.5 with 2 bins) belongs to the lower bin (b/M, (b+1)/M]
    # (the two edge samples are wrong: lower bin 0.5 * |0 - 0.5| + upper 0.5 * |1 - 0.9| = 30 %;
    # putting them in the upper bin instead would give |0.5 - 0.7| = 20 %)
    p = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9], [0.1, 0.9]])
    y = torch.tensor([1, 1, 1, 1])
    expected = _ece_loop(p.tolist(), y.tolist(), 2)
    assert expected == pytest.approx(30.0)
    assert expected_calibration_error(p, y, n_bins=2) == pytest.approx(expected)
    assert expected_calibration_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) is None


def test_evaluate_dict():
    z, y = _data(90, 6, seed=3)
    y[y == 5] = 0  # class 5 absent
    counts = [400, 150, 60, 30, 10, 2]
    res = evaluate(z, y, counts)
    assert set(res) == {"top1", "many", "medium", "few", "ece", "confidence", "per_class", "num_samples"}
    json.dumps(res)  # plain types only
    assert isinstance(res["num_samples"], int) and res["num_samples"] == 90
    assert res["top1"] == pytest.approx(top1(z, y))
    loop = _loop_per_class(z.argmax(1).tolist(), y.tolist(), 6)
    assert res["per_class"][5] is None
    assert res["per_class"][:5] == pytest.approx(loop[:5])
    assert res["many"] == pytest.approx((loop[0] + loop[1]) / 2)
    assert res["medium"] == pytest.approx((loop[2] + loop[3]) / 2)
    assert res["few"] == pytest.approx(loop[4])  # class 5 has no test samples: excluded
    assert res["ece"] == pytest.approx(_ece_loop(torch.softmax(z.double(), 1).tolist(), y.tolist(), 15))
    probs = torch.softmax(z.double(), 1).tolist()
    assert res["confidence"] == pytest.approx(100 * sum(max(row) for row in probs) / len(probs))
    assert all(isinstance(res[k], float) for k in ("top1", "many", "medium", "few", "ece", "confidence"))
    assert evaluate(z, y)["many"] is None  # no train counts, no groups
    empty = evaluate(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), [5, 50, 500])
    assert empty["top1"] is None and empty["ece"] is None and empty["confidence"] is None and empty["many"] is None
    assert empty["per_class"] == [None, None, None] and empty["num_samples"] == 0


def test_mean_confidence_says_which_way_ece_points():
    # always 90% sure, right half the time: overconfident, confidence 90 above top-1 50
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    y = torch.tensor([0, 1, 1, 0])
    assert mean_confidence(p) == pytest.approx(90.0)
    assert mean_confidence(torch.log(p), from_logits=True) == pytest.approx(90.0)
    assert expected_calibration_error(p, y) == pytest.approx(40.0)
    assert mean_confidence(torch.zeros(0, 2)) is None


def test_bad_inputs():
    z, y = _data(10, 3)
    with pytest.raises(ValueError, match="targets"):
        top1(z, y[:4])
    with pytest.raises(ValueError, match="targets"):
        evaluate(z, torch.full((10,), 3), [1, 2, 3])
    with pytest.raises(ValueError, match="targets"):
        top1(z, y.float())
    bad = z.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="logits"):
        evaluate(bad, y, [1, 2, 3])
    with pytest.raises(ValueError, match="train_counts"):
        evaluate(z, y, [1, 2])
    with pytest.raises(ValueError, match="train_counts"):
        shot_groups([5, -1])
    with pytest.raises(ValueError, match="preds"):
        per_class_accuracy(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(z, y, n_bins=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_probabilities_are_detected_as_probabilities(dtype):
    # softmax outputs stored in half precision sum to 1 only to about the dtype's epsilon (fp16
    # ~3e-4, bf16 ~3e-3 here): they were taken for logits and softmaxed again, which flattened
    # every confidence towards 1/C (ECE 6.7 instead of 57.5 on this data)
    z, y = _data(200, 10, seed=5)
    p = torch.softmax(3 * z.double(), 1)
    q = p.to(dtype)
    assert (q.double().sum(1) - 1).abs().max() > 1e-4  # the old tolerance
    exact = expected_calibration_error(q.double(), y, from_logits=False)
    assert expected_calibration_error(q, y) == pytest.approx(exact, rel=1e-9)
    assert mean_confidence(q) == pytest.approx(mean_confidence(q.double(), from_logits=False), rel=1e-9)
    # half-precision logits are still logits
    assert mean_confidence(z.to(dtype)) == pytest.approx(mean_confidence(z.to(dtype).double(), from_logits=True))


def test_labels_outside_the_score_columns_are_an_error_not_a_miss():
    z, y = _data(10, 3)
    with pytest.raises(ValueError, match="targets contain label 3 but there are only 3 classes"):
        top1(z, torch.full((10,), 3))
    # scores with another number of columns than num_classes
    with pytest.raises(ValueError, match="4 columns"):
        per_class_accuracy(torch.randn(10, 4), y, 3)
    with pytest.raises(ValueError, match="2 columns"):
        per_class_accuracy(torch.randn(10, 2), y, 3)


def test_group_accuracies_takes_evaluates_per_class_list_with_none():
    z, y = _data(90, 6, seed=3)
    y[y == 5] = 0
    counts = [400, 150, 60, 30, 10, 2]
    res = evaluate(z, y, counts)
    assert res["per_class"][5] is None
    got = group_accuracies(res["per_class"], counts)  # as it is read back from results.json
    assert got == {k: pytest.approx(res[k]) for k in ("many", "medium", "few")}
