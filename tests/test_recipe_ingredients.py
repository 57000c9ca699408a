"""The stronger recipes' ingredients inside the trainer: SAM, CutMix, MaxNorm, label smoothing. Each
run stopped mid-epoch resumes to the weights of the uninterrupted run."""
import json

import pytest
import torch
from test_train import _digits, _same_model, _train_stopped_in_step, weights

from longtail import train as train_mod
from longtail.optim import relative_threshold
from longtail.rundir import resume_config
from longtail.train import train

pytestmark = pytest.mark.xdist_group("recipe_ingredients")


@pytest.mark.parametrize("optim, forwards_per_step", [({"sam_rho": 0.05}, 2), ({"cutmix_alpha": 1.0}, 1),
                                                      ({"max_norm": 0.1, "weight_decay": 5e-3}, 1)])
def test_a_run_with_the_ingredient_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch, optim,
                                                                                  forwards_per_step):
    loss = {"name": "gala", "mode": "reference"} if "sam_rho" in optim else {"name": "la"}
    plain = train(_digits(tmp_path, "plain", loss=loss))
    whole = train(_digits(tmp_path, "whole", loss=loss, **optim))
    # 8 steps an epoch: stop in epoch 2's third step
    _train_stopped_in_step(monkeypatch, _digits(tmp_path, "cut", loss=loss, **optim), 11 * forwards_per_step,
                           "epoch 2 step 3")
    run = train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    a, b = weights(whole), weights(run)
    assert _same_model(a, b) and all(torch.equal(a["loss"][k], b["loss"][k]) for k in a["loss"])
    assert not _same_model(a, weights(plain))  # the ingredient changed the training


def test_sam_takes_two_passes_a_step_and_feeds_galas_statistics_once(tmp_path, monkeypatch):
    forwards, updates = [], []
    real_forward = train_mod.models.Classifier.forward
    real_update = train_mod.losses.GALA._update

    def counted(self, x):  # training passes only (evaluations run in eval mode)
        if self.training:
            forwards.append(1)
        return real_forward(self, x)

    monkeypatch.setattr(train_mod.models.Classifier, "forward", counted)
    monkeypatch.setattr(train_mod.losses.GALA, "_update", lambda self, *a: updates.append(1) or real_update(self, *a))
    cfg = _digits(tmp_path, "sam", loss={"name": "gala", "mode": "reference"}, sam_rho=0.05, epochs=1)
    run = train(cfg)
    steps = weights(run)["state"]["images_seen"] // 32  # batches of 32, the last partial one dropped
    assert steps > 5 and len(updates) == steps and len(forwards) == 2 * steps  # two passes a step, one update


def test_max_norm_keeps_every_class_vector_within_its_threshold(tmp_path):
    start = train(_digits(tmp_path, "start", loss={"name": "ce"}, epochs=1))
    threshold = relative_threshold(weights(start, "last.pt")["model"]["head.weight"], 0.1)
    cfg = _digits(tmp_path, "second", loss={"name": "ce"}, max_norm=0.1, weight_decay=5e-3)
    cfg.model.init_from = str(start)
    cfg.model.freeze_backbone = True
    run = train(cfg)
    ckpt = weights(run)
    # the threshold: a tenth of the way from the shortest class vector to the longest of the loaded head
    assert ckpt["max_norm"]["threshold"] == pytest.approx(threshold)
    norms = ckpt["model"]["head.weight"].norm(dim=1)
    assert float(norms.max()) <= threshold * (1 + 1e-6)
    assert float(weights(start)["model"]["head.weight"].norm(dim=1).max()) > threshold  # it had work to do


def test_label_smoothing_is_a_loss_key(tmp_path):
    cfg = _digits(tmp_path, "smooth", loss={"name": "la", "label_smoothing": 0.1}, epochs=1)
    run = train(cfg)
    assert json.loads((run / "results.json").read_text())["settings"]["loss.label_smoothing"] == 0.1
    plain = train(_digits(tmp_path, "plain", loss={"name": "la"}, epochs=1))
    assert not _same_model(weights(run), weights(plain))
