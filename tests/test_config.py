import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA

from longtail.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    experiment_settings,
    load_config,
    parse_override,
    resolve,
    save_config,
)
from longtail.data.sampling import epoch_batches
from longtail.train import learning_rate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the shipped configs (src/longtail/configs)


def test_overrides_and_types(tmp_path):
    cfg = load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml",
                      ["loss.lambda1=1.0", "optim.lr=0.05", "seed=3", "data.limit_per_class=5"])
    assert cfg.loss.name == "gala" and cfg.loss.params == {"lambda1": 1.0, "lambda2": 0.9, "mode": "reference"}
    assert cfg.optim.lr == 0.05 and cfg.seed == 3 and cfg.data.limit_per_class == 5
    # switching the loss by override drops the file's parameters of the old loss (DRW settings stay)
    ce = load_config(CONFIGS / "cifar100_lt_if100_ala.yaml", ["loss.name=ce"])
    assert ce.loss.name == "ce" and ce.loss.params == {} and ce.loss.drw_epoch == 160
    with pytest.raises(ConfigError, match="not a parameter of loss 'ce'"):
        load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml", ["loss.name=ce", "loss.lambda1=1"])
    # null removes a parameter
    assert "lambda1" not in load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml",
                                        ["loss.lambda1=null"]).loss.params
    # a saved config loads back to the same thing
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown key 'optim.lrr'; valid keys here: batch_size"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("optim.epochs=1.5", "optim.epochs must be an integer"),
    ("precision=fp8", "precision must be one of auto, fp32, bf16, fp16"),
    ("loss.name=nope", "loss.name must be one of ala, bs, cb, ce, focal, gala, gcl, la, ldam, got 'nope'"),
    ("model.name=vgg", "model.name must be one of convnet, mlp, resnet10,"),
    ("data.name=mnist", "data.name must be one of cifar10-lt, cifar100-lt,"),
    ("channels_last=maybe", "channels_last must be true or false"),
    ("loss.lambda9=1", "loss.lambda9 is not a parameter of loss 'gala'; its parameters are: check_values, eps, lambda1, lambda2, mode, phi (and for every loss: name, drw_epoch, drw_beta)"),
    ("optim.epochs=0", "optim.epochs must be >= 1, got 0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0"),
    ("optim.cutmix_prob=1.5", "optim.cutmix_prob must be <= 1, got 1.5"),
    ("model.backbone_lr=-1", "model.backbone_lr must be >= 0, got -1"),
    ("optim.grad_clip=5", None),
    ("optim.sam_rho=0.05", None),
    ("loss.drw_epoch=150", None),
    ("loss.drw_beta=1.0", "loss.drw_beta must be < 1, got 1.0"),
    ("loss.drw_epoch=200", "loss.drw_epoch must be an epoch of the run (0 to 199)"),
    ("eval.tau_grid=[]", "eval.tau_grid must be a non-empty list"),
    ("optim.milestones=[180,160]", "optim.milestones must increase"),
    ("compile_mode=fastest", "compile_mode must be one of default, reduce-overhead, max-autotune"),
    ("check_every=-1", "check_every must be >= 0 (0 = auto), got -1"),
    ("data.autoaugment_shear=bilinear", "unknown key 'data.autoaugment_shear'"),
    ("model.head=linear", None),
    ("nonsense", "must look like key=value"),
    # checked with the config, not by torch or after an epoch of training
    ("device=gpu", "device must be auto or a torch device such as cpu, cuda or cuda:1, got 'gpu'"),
    ("device=cuda:x", "device must be auto or a torch device"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
    ("eval.batch_size=-4", "eval.batch_size must be >= 1, got -4"),
    ("optim.lr=.nan", "optim.lr must be a finite number, got nan"),
    ("optim.lr=.inf", "optim.lr must be a finite number, got inf"),
    ("optim.weight_decay=.nan", "optim.weight_decay must be a finite number"),
    ("optim.momentum=-.inf", "optim.momentum must be a finite number"),
    ("loss.lambda1=.nan", "loss.lambda1 must be a finite number"),
    ("eval.tau_grid=[0.5, .nan]", "eval.tau_grid must be a finite number"),
    ("seed=-1", "seed must be >= 0, got -1"),
    ("loss.mode=xyz", "loss gala: GALA mode must be one of ('paper', 'reference'), got 'xyz'"),  # before data loads
    ("optim.momentum=1.5", "optim.momentum must be < 1, got 1.5"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay must be >= 0, got -0.0001"),
    ("optim.grad_clip=-1", "optim.grad_clip must be >= 0 (0 or null: no clipping)"),
    ("data.workers=-1", "data.workers must be >= 0"),
    ("seed=4294967296", "seed must be < 4294967296, got 4294967296"),
    ("optim.lr=[oops", "optim.lr must be a number, got '[oops'"),  # not YAML: a string
    ("loss=gala", "loss must be a mapping, got 'gala'"),
    # a key of a section given without it, or misspelt
    ("epochs=2", "; did you mean optim.epochs?"),
    ("lr=0.01", "; did you mean optim.lr?"),
    ("batch_size=8", "; did you mean optim.batch_size or eval.batch_size?"),
    ("optim.lrr=0.1", "; did you mean optim.lr?"),
    ("optim.epoch=3", "unknown key 'optim.epoch'; valid keys here: batch_size"),
    ("optim.epoch=3", "; did you mean optim.epochs?"),
])
def test_bad_overrides_name_the_choices(override, message):
    if message is None:  # fine for GALA, which is not a cosine-head loss
        load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml", [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml", [override])
    assert message in str(err.value)


def test_every_shipped_config_loads():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 88 + 20
    for f in files:
        cfg = load_config(f)
        assert isinstance(cfg, Config)
        assert cfg.data.root is None, f"{f.name}: data.root comes from the command line or LONGTAIL_DATA"


def test_cifar_configs_follow_the_two_recipes():
    gala = load_config(CONFIGS / "cifar100_lt_if100_gala_paper.yaml")
    assert (gala.optim.batch_size, gala.optim.weight_decay, gala.optim.schedule, gala.data.augment) == \
        (64, 5e-4, "cosine", "autoaugment")
    ldam = load_config(CONFIGS / "cifar100_lt_if100_ldam_drw.yaml")
    assert (ldam.optim.batch_size, ldam.optim.weight_decay, ldam.optim.warmup_epochs, ldam.loss.drw_epoch) == \
        (128, 2e-4, 5, 160)
    # la_ldam_recipe is LA in CE's recipe: the same config but the loss
    la = load_config(CONFIGS / "cifar100_lt_if100_la_ldam_recipe.yaml")
    ce = load_config(CONFIGS / "cifar100_lt_if100_ce.yaml")
    assert (la.loss.name, la.loss.params) == ("la", {"tau": 1.0})
    assert (la.data, la.optim, la.model) == (ce.data, ce.optim, ce.model)
    gala = load_config(CONFIGS / "cifar100_lt_if100_gala_reference_ldam_recipe.yaml")
    assert gala.loss == load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml").loss
    assert (gala.data, gala.optim) == (ce.data, ce.optim)
    raw = yaml.safe_load((CONFIGS / "cifar10_lt_if50_ala.yaml").read_text())
    assert raw["data"]["imb_factor"] == 50 and raw["data"]["name"] == "cifar10-lt"


def test_gala_schedule_matches_spec():
    o = load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml").optim
    lrs = [learning_rate(e, o) for e in range(200)]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)
    # the released CosineAnnealingLRWarmup on 1-based epoch E: 0.1 * (1 + cos(pi (E - 2) / 198)) / 2
    for e in range(1, 200):
        E = e + 1
        assert lrs[e] == pytest.approx(0.05 * (1 + math.cos(math.pi * (E - 2) / 198)), abs=1e-12)
    assert lrs[2] < lrs[1] and lrs[-1] == pytest.approx(0.0, abs=1e-12)  # no repeated peak; 0 at epoch 200


def test_ldam_schedule_matches_spec():
    o = load_config(CONFIGS / "cifar100_lt_if100_ce.yaml").optim
    # LDAM-DRW's adjust_learning_rate with 1-based epoch E: E<=5 -> lr*E/5; E>180 -> 1e-4 lr; E>160 -> 1e-2 lr
    for e in range(200):
        E = e + 1
        want = 0.1 * E / 5 if E <= 5 else 0.1 * (1e-4 if E > 180 else 1e-2 if E > 160 else 1)
        assert learning_rate(e, o) == pytest.approx(want), e


def test_gcl_own_recipe_matches_the_gcl_release():
    own = load_config(CONFIGS / "cifar100_lt_if100_gcl_own_recipe.yaml")
    ours = load_config(CONFIGS / "cifar100_lt_if100_gcl.yaml")
    assert own.loss == ours.loss and own.model == ours.model  # only the recipe differs
    o = own.optim
    assert (o.batch_size, o.weight_decay, o.mixup_alpha, o.drop_last, own.data.augment) == \
        (64, 2e-4, 1.0, False, "crop_flip")
    # cifar_train_backbone.py's adjust_learning_rate, 1-based epoch E: E<=5 -> lr*E/5; E>180 -> 0.01 lr; E>160 -> 0.1 lr
    for e in range(200):
        E = e + 1
        want = 0.1 * E / 5 if E <= 5 else 0.1 * (1e-2 if E > 180 else 1e-1 if E > 160 else 1)
        assert learning_rate(e, o) == pytest.approx(want), e
    # its second stage is the same classifier re-training as for the GALA-recipe first stage
    stage2 = {name: yaml.safe_load((CONFIGS / f"cifar100_lt_if100_{name}.yaml").read_text())
              for name in ("gcl_stage2", "gcl_own_recipe_stage2")}
    assert stage2["gcl_stage2"] == stage2["gcl_own_recipe_stage2"]


def test_epoch_batches_split_global_batches_across_ranks():
    one = epoch_batches(103, 16, epoch=4, seed=7)
    assert len(one) == 6 and all(len(b) == 16 for b in one)  # drop_last
    two = [epoch_batches(103, 16, epoch=4, seed=7, rank=r, world=2) for r in range(2)]
    for b, (r0, r1) in zip(one, zip(*two)):
        assert r0.tolist() + r1.tolist() == b.tolist()
    assert epoch_batches(103, 16, 5, 7)[0].tolist() != one[0].tolist()  # a new order every epoch
    keep = epoch_batches(103, 16, 4, 7, drop_last=False)
    assert sorted(int(i) for b in keep for i in b) == list(range(103))


def test_cosine_head_losses_share_one_scale_with_the_head():
    ala = CONFIGS / "cifar100_lt_if100_ala.yaml"
    with pytest.raises(ConfigError, match="defined on the cosine head"):
        load_config(ala, ["model.head=linear"])
    with pytest.raises(ConfigError, match="must share one scale"):
        load_config(ala, ["model.scale=16"])  # the file's loss.scale is 30
    cfg = resolve(load_config(ala, ["loss.scale=16"]))
    assert cfg.model.scale == 16 and cfg.loss.params["scale"] == 16 and cfg.model.head == "cosine"
    declared = load_config(ala, ["loss.scale=null", "model.scale=20"])
    assert declared.model.head == "auto" and "scale" not in declared.loss.params  # checking changes nothing
    cfg = resolve(declared)
    assert cfg.loss.params["scale"] == 20 and cfg.model.head == "cosine"
    assert resolve(load_config(CONFIGS / "cifar100_lt_if100_la.yaml")).model.head == "linear"
    assert resolve(cfg) == cfg  # resolving twice changes nothing


def test_resolve_makes_the_data_root_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LONGTAIL_DATA", raising=False)
    assert resolve(load_config(None, ["data.root=data"])).data.root == str(tmp_path / "data")
    assert resolve(load_config(None)).data.root == str(tmp_path / "data")  # CIFAR's default, ./data
    assert resolve(load_config(None, ["data.name=digits-lt"])).data.root is None  # embedded: no root
    monkeypatch.setenv("LONGTAIL_DATA", "elsewhere")
    assert resolve(load_config(None)).data.root == str(tmp_path / "elsewhere")
    assert resolve(load_config(None, ["data.root=/given"])).data.root == "/given"  # the config wins


def test_each_key_is_declared_once_with_its_kind():
    from longtail.config import declared, keys_where

    assert set(keys_where("runtime")) >= {"device", "threads", "progress", "data.root", "data.workers",
                                          "eval.batch_size", "eval.test", "compile_mode", "check_every"}
    assert set(keys_where("resumable")) == {"data.root", "data.workers", "data.prefetch", "eval.batch_size",
                                            "check_every", "threads", "tensorboard", "progress"}
    assert set(keys_where("split")) == {"data.name", "data.imb_factor", "data.val_per_class", "data.val_seed",
                                        "data.val_shortfall", "data.test_fraction", "data.train_list", "data.val_list"}
    assert set(keys_where("per_seed")) == {"seed", "model.init_from"}
    # every declared key but the runtime and per-seed ones is part of a setting where it has an effect
    settings = experiment_settings(load_config(CONFIGS / "cifar100_lt_if100_la.yaml", ["optim.sam_rho=0.05"]))
    for name, f in declared().items():
        if not (f.metadata["runtime"] or f.metadata["per_seed"] or f.metadata["when"]):
            assert name in settings, name
    assert settings["optim.sam_rho"] == 0.05 and "optim.sam_adaptive" in settings
    # a switch at its off value is left out, so settings made before it existed stay the same
    plain = experiment_settings(load_config(CONFIGS / "cifar100_lt_if100_la.yaml"))
    assert not {"optim.sam_rho", "optim.cutmix_alpha", "optim.max_norm", "model.backbone_lr", "data.resize"} & set(plain)


def test_combinations_that_cannot_work_are_refused_at_the_edge():
    la = CONFIGS / "cifar100_lt_if100_la.yaml"
    with pytest.raises(ConfigError, match="optim.grad_clip with optim.sam_rho: SAM steps with the gradient at the "
                                          "perturbed weights and does not clip it"):
        load_config(la, ["optim.sam_rho=0.05", "optim.grad_clip=5"])
    with pytest.raises(ConfigError, match="loss.drw_epoch with loss cb: cb carries class-balanced weights"):
        load_config(CONFIGS / "cifar100_lt_if100_cb.yaml", ["loss.drw_epoch=160"])
    with pytest.raises(ConfigError, match=r"data.resize \(128\) must be >= data.image_size \(224\): .* "
                                          r"data.image_size=224 data.resize=256"):
        load_config(CONFIGS / "folder.yaml", ["data.image_size=224"])
    assert load_config(CONFIGS / "folder.yaml", ["data.image_size=224", "data.resize=256"]).data.resize == 256
    load_config(CONFIGS / "cifar100_lt_if100_la.yaml", ["data.image_size=32", "data.resize=8"])  # CIFAR: no resize


def test_an_empty_config_file_is_refused(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty.yaml is empty: a config names at least its data, model and loss"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "defaults.yaml").write_text("{}\n")
    assert load_config(tmp_path / "defaults.yaml") == load_config(None)  # every default, said explicitly


def test_the_archived_runs_settings_are_what_this_version_computes():
    # the settings stored in docs/results were computed from each run's saved config; the keys this
    # version no longer has (the nearest shear and the square crop shims) held their only value there
    import copy
    import json

    from longtail.config import settings_fingerprint

    archived = sorted((CONFIGS.parent / "docs" / "results").rglob("results.json"))  # nested archives too
    assert len(archived) > 80
    for f in archived:
        run = json.loads(f.read_text())
        if "config" not in run:
            continue  # recorded figures of a lost run: its settings are its siblings'
        cfg = copy.deepcopy(run["config"])
        for shim in ("autoaugment_shear", "train_crop"):
            cfg["data"].pop(shim, None)
        assert experiment_settings(config_from_dict(cfg)) == run["settings"], f
        first = (run.get("first_stage") or {}).get("settings") or {}
        together = {**run["settings"], **{f"first_stage.{k}": v for k, v in first.items()}}
        assert settings_fingerprint(together) == run["setting"], f


def test_a_loss_parameter_left_at_its_default_is_the_same_setting():
    from longtail.config import experiment_settings, setting_key

    gcl = CONFIGS / "cifar100_lt_if100_gcl.yaml"
    plain = load_config(gcl)
    assert "margin" not in plain.loss.params
    assert setting_key(plain) == setting_key(load_config(gcl, ["loss.margin=0", "loss.noise_mul=0.5"]))
    assert setting_key(plain) != setting_key(load_config(gcl, ["loss.margin=0.1"]))
    assert experiment_settings(plain)["loss.margin"] == 0.0 and experiment_settings(plain)["loss.focal_gamma"] == 0.0
    # the step schedule's milestones do nothing on a cosine schedule
    assert setting_key(plain) == setting_key(load_config(gcl, ["optim.milestones=[100]", "optim.step_factors=[0.1]"]))
    step = load_config(gcl, ["optim.schedule=step"])
    assert setting_key(step) != setting_key(load_config(gcl, ["optim.schedule=step", "optim.milestones=[100, 150]"]))
    # an input check changes no result, nor does watching the test split (best-on-test) or not
    assert setting_key(plain) == setting_key(load_config(gcl, ["loss.check_values=false"]))
    assert setting_key(plain) == setting_key(load_config(gcl, ["eval.track_test=false"]))
    # grad_clip 0 and null both mean no clipping; a real clip is another setting
    assert setting_key(plain) == setting_key(load_config(gcl, ["optim.grad_clip=0"]))
    assert setting_key(plain) != setting_key(load_config(gcl, ["optim.grad_clip=5"]))


def test_second_stage_options_are_checked():
    gala = CONFIGS / "cifar100_lt_if100_gala_reference.yaml"
    with pytest.raises(ConfigError, match="mixup_alpha is not supported with loss gala"):
        load_config(gala, ["optim.mixup_alpha=1"])
    with pytest.raises(ConfigError, match="mixup_alpha must be >= 0"):
        load_config(gala, ["optim.mixup_alpha=-1"])
    with pytest.raises(ConfigError, match="data.sampler must be one of instance, class_balanced"):
        load_config(gala, ["data.sampler=balanced"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(gala, ["model.init_from=runs/a", "model.pretrained=b.pth"])
    stage2 = resolve(load_config(CONFIGS / "cifar100_lt_if100_gcl_stage2.yaml"))
    assert stage2.model.freeze_backbone and stage2.data.sampler == "class_balanced"
    assert stage2.model.scale == 20 and stage2.loss.params == {"scale": 20.0, "noise_mul": 0.5, "margin": 0.1,
                                                               "focal_gamma": 1.0}
    # the first-stage run a second stage starts from varies with the seed, like the seed
    from longtail.config import setting_key
    a = load_config(CONFIGS / "cifar100_lt_if100_gcl_stage2.yaml", ["model.init_from=runs/gcl_s0"])
    b = load_config(CONFIGS / "cifar100_lt_if100_gcl_stage2.yaml", ["model.init_from=runs/gcl_s1", "seed=1"])
    assert setting_key(a) == setting_key(b) != setting_key(load_config(CONFIGS / "cifar100_lt_if100_gcl.yaml"))


def test_loss_overrides_do_not_depend_on_their_order():
    ala = CONFIGS / "cifar100_lt_if100_ala.yaml"
    first = load_config(ala, ["loss.mode=reference", "loss.name=gala"])
    assert first == load_config(ala, ["loss.name=gala", "loss.mode=reference"])
    # the file's ala parameters are dropped, every one given on the command line kept (and DRW)
    assert first.loss.params == {"mode": "reference"} and first.loss.drw_epoch == 160
    assert load_config(ala, ["loss.lambda1=1.5", "loss.name=gala"]).loss.params == {"lambda1": 1.5}
    with pytest.raises(ConfigError, match="loss.lambda1 is not a parameter of loss 'ce'"):
        load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml", ["loss.lambda1=1", "loss.name=ce"])
    # only the final loss counts: back to the file's own loss, the file's parameters stay
    gala = CONFIGS / "cifar100_lt_if100_gala_reference.yaml"
    assert load_config(gala, ["loss.name=ce", "loss.name=gala"]).loss == load_config(gala).loss
    assert load_config(gala, ["loss.name=gala"]).loss == load_config(gala).loss


def test_scientific_notation_is_a_number_in_overrides_and_files(tmp_path):
    from longtail.config import setting_key

    for text, value in [("1e-3", 1e-3), ("5e-2", 0.05), ("1e0", 1.0), ("2.5E+1", 25.0)]:
        assert load_config(None, [f"optim.lr={text}"]).optim.lr == value
    gala = CONFIGS / "cifar100_lt_if100_gala_reference.yaml"
    cfg = load_config(gala, ["optim.weight_decay=1e-4", "loss.lambda1=1e0", "loss.eps=1e-6",
                             "eval.tau_grid=[0, 5e-1, 1e0]", "optim.step_factors=[1e-2, 1e-4]"])
    assert (cfg.optim.weight_decay, cfg.loss.params["lambda1"], cfg.loss.params["eps"]) == (1e-4, 1.0, 1e-6)
    assert cfg.eval.tau_grid == [0.0, 0.5, 1.0] and cfg.optim.step_factors == [1e-2, 1e-4]
    assert setting_key(load_config(gala, ["optim.lr=1e-3"])) == setting_key(load_config(gala, ["optim.lr=0.001"]))
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\nloss:\n  name: focal\n  gamma: 2e0\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.loss.params) == (1e-3, 5e-4, {"gamma": 2.0})
    save_config(cfg, tmp_path / "saved.yaml")  # as a run folder keeps it
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_text_keys_take_an_override_as_typed(tmp_path):
    # YAML would read these as 123, a date, false, true, 0.001, 1.5, an error, a list and "exp"
    for typed in ("123", "007", "2026-12-03", "no", "true", "1e-3", "1.50", "[oops", "[a, b]", "exp #3"):
        assert load_config(None, [f"run_name={typed}"]).run_name == typed
    assert load_config(None, ["data.root=007"]).data.root == "007"
    assert load_config(None, ["run_name='my run'"]).run_name == "my run"  # quotes that reached us are not text
    gala = CONFIGS / "cifar100_lt_if100_gala_reference.yaml"
    with pytest.raises(ConfigError, match="loss.mode must be a string, got 1"):  # a loss parameter reads as YAML
        load_config(gala, ["loss.mode=1"])
    # null still clears an optional key; typed keys read YAML as before
    assert load_config(None, ["run_name=null"]).run_name is None
    assert load_config(None, ["data.root=none"]).data.root is None
    cfg = load_config(None, ["data.download=no", "seed=7", "optim.lr=1", "optim.milestones=[10, 20]",
                             "optim.step_factors=[0.1, 0.01]", "data.limit_per_class=null", "model.sync_bn=true"])
    assert cfg.data.download is False and cfg.seed == 7 and cfg.model.sync_bn is True
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.milestones == [10, 20]
    assert cfg.data.limit_per_class is None
    with pytest.raises(ConfigError, match="seed must be an integer, got 'seven'"):
        load_config(None, ["seed=seven"])
    # the parsed values are plain Python values: they dump as YAML and JSON
    path, value = parse_override("run_name=007")
    assert (path, value) == (["run_name"], "007") and parse_override("optim.lr=1e-3")[1] == "1e-3"
    data = apply_overrides({}, ["seed=3", "optim.milestones=[1, 2]", "run_name=12:30"])
    assert yaml.safe_load(yaml.safe_dump(data)) == data == {"seed": 3, "optim": {"milestones": [1, 2]},
                                                            "run_name": "12:30"}
    # in a file, unquoted text that YAML reads as something else (007 -> 7, 12:30 -> 750, no -> false,
    # a date) is refused with a hint, not silently rewritten; quoted, it is text
    for text in ("007", "12:30", "no", "2026-12-03", "1.10"):
        (tmp_path / "c.yaml").write_text(f"run_name: {text}\n")
        with pytest.raises(ConfigError, match="run_name must be a string, got .*quote the text"):
            load_config(tmp_path / "c.yaml")
        (tmp_path / "c.yaml").write_text(f"run_name: '{text}'\n")
        cfg = load_config(tmp_path / "c.yaml")
        assert cfg.run_name == text
        save_config(cfg, tmp_path / "saved.yaml")
        assert load_config(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps", "xpu"])
def test_device_forms_the_code_accepts(device):
    assert load_config(None, [f"device={device}"]).device == device


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("configs_generate", CONFIGS / "_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_configs_are_what_the_generator_writes(tmp_path):
    gen = _generator()
    gen.HERE = tmp_path
    gen.main()
    written = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    # folder.yaml, the practitioner's config, is written by hand: each choice has its comment
    shipped = {p.name: p.read_text() for p in CONFIGS.glob("*.yaml") if p.name != "folder.yaml"}
    assert sorted(written) == sorted(shipped)  # no stale file, none missing
    assert [n for n in sorted(shipped) if written[n] != shipped[n]] == []  # no drift: edit the generator, rerun it


def test_config_headers_name_the_folder_data_root_must_hold():
    """data.root is joined with CIFAR's folder (cifar-10-batches-py, not the archive's name
    cifar-10-python) or with each list line's path (Places-LT: train/..., val/...)."""
    from longtail.data import LIST_BENCHMARKS
    from longtail.data.cifar import CIFAR_INFO

    splits = SHARED_DATA / "splits"
    for f in sorted(CONFIGS.glob("*_*.yaml")):  # the benchmarks' configs (folder.yaml: your own images)
        holds = re.search(r"^# Data: data\.root=DIR.*?, DIR holding (.*?)(;|$)", f.read_text(), re.M).group(1)
        cfg = load_config(f)
        if cfg.data.name in ("cifar10-lt", "cifar100-lt"):
            assert holds == CIFAR_INFO[cfg.data.name[:-3]].folder + "/", f.name
            continue
        _, sub, names, _, _ = LIST_BENCHMARKS[cfg.data.name]
        tops = set()
        for name in names:
            path = splits / sub / name if name else None
            if path is not None and path.is_file():  # the train lists of ImageNet-LT and iNat are not shipped
                tops |= {line.split("/", 1)[0] for line in path.read_text().splitlines() if line.strip()}
        assert tops and all(f"{top}/" in holds for top in tops), (f.name, holds, tops)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("cifar*_lt_if*.yaml")), ids=lambda p: p.stem)
def test_every_cifar_config_matches_its_name_and_spec_recipe(path):
    dataset, imb, method = re.fullmatch(r"cifar(10|100)_lt_if(\d+)_(\w+)", path.stem).groups()
    cfg = load_config(path)
    assert (cfg.data.name, cfg.data.imb_factor, cfg.model.name, cfg.eval.published_pr_tau) == \
        (f"cifar{dataset}-lt", float(imb), "resnet32", 1.0)
    o, loss = cfg.optim, cfg.loss
    # SPEC section 2: ALA, LDAM and GCL on the cosine head (the head's and the loss's scale: 30), others linear
    run = resolve(cfg)
    if loss.name in ("ala", "ldam", "gcl"):
        assert run.model.head == "cosine" and run.model.scale == loss.params["scale"]
        assert "stage2" in method or loss.params["scale"] == 30.0
    else:
        assert run.model.head == "linear"
    if loss.name == "ala":
        assert loss.params.get("normalise_qf", True) is True
    if loss.name == "gala":
        assert (loss.params["lambda1"], loss.params["lambda2"]) == (1.2, 0.9)
        assert loss.params["mode"] == ("paper" if method == "gala_paper" else "reference")
    if loss.name == "la":
        assert loss.params.get("tau", 1.0) == 1.0
    if method in ("bs", "la", "gcl", "gala_paper", "gala_reference"):  # SPEC 5, as released with GALA
        assert (o.epochs, o.batch_size, o.lr, o.momentum, o.weight_decay, o.schedule, o.warmup_epochs, o.drop_last,
                o.mixup_alpha, cfg.data.augment, loss.drw_epoch) == \
            (200, 64, 0.1, 0.9, 5e-4, "cosine", 2, True, 0.0, "autoaugment", None)
    elif method == "wb":  # weight balancing's stage one as released: CE, large weight decay, 320 epochs
        assert (o.epochs, o.batch_size, o.lr, o.weight_decay, o.schedule, o.warmup_epochs, cfg.data.augment,
                loss.name) == (320, 64, 0.01, 5e-3, "cosine", 0, "crop_flip", "ce")
    elif method == "wb_stage2":  # its classifier re-training: class-balanced CE, weight decay 0.1, MaxNorm
        assert (o.epochs, o.lr, o.weight_decay, o.max_norm, cfg.model.freeze_backbone, loss.name,
                loss.params["beta"]) == (10, 0.01, 0.1, 0.1, True, "cb", 0.9999)
    elif "gcl" not in method:  # SPEC 5, LDAM-DRW style
        assert (o.epochs, o.batch_size, o.lr, o.momentum, o.weight_decay, o.schedule, o.warmup_epochs, o.milestones,
                o.step_factors, o.mixup_alpha, cfg.data.augment) == \
            (200, 128, 0.1, 0.9, 2e-4, "step", 5, [160, 180], [0.01, 0.0001], 0.0, "crop_flip")
        assert loss.drw_epoch == (160 if method in ("drw", "ldam_drw", "ala") else None)


def test_lr_at_the_epochs_spec_names():
    """1-based epochs as SPEC words them; learning_rate takes the 0-based index."""
    gala = load_config(CONFIGS / "cifar10_lt_if200_gala_paper.yaml").optim
    ldam = load_config(CONFIGS / "cifar10_lt_if200_ldam_drw.yaml").optim
    cos = lambda E: 0.05 * (1 + math.cos(math.pi * (E - 2) / 198))  # noqa: E731
    for E, want_gala, want_ldam in [(1, 0.05, 0.02), (2, 0.1, 0.04), (3, cos(3), 0.06), (160, cos(160), 0.1),
                                    (161, cos(161), 1e-3), (180, cos(180), 1e-3), (181, cos(181), 1e-5),
                                    (200, 0.0, 1e-5)]:
        assert learning_rate(E - 1, gala) == pytest.approx(want_gala, abs=1e-12), E
        assert learning_rate(E - 1, ldam) == pytest.approx(want_ldam, abs=1e-12), E


def test_large_dataset_configs_use_the_published_pr_tau_and_backbone():
    want = {"imagenet-lt": 1.7, "inat2018": 1.5, "places-lt": 1.4}  # SPEC section 4
    backbones = {"imagenet_lt_resnet50": "resnet50", "imagenet_lt_resnext50": "resnext50_32x4d",
                 "inat2018_resnet50": "resnet50", "places_lt_resnet152": "resnet152"}
    files = [f for f in CONFIGS.glob("*_*.yaml") if not f.name.startswith("cifar")]
    assert len(files) == 20
    for f in files:
        cfg = load_config(f)
        assert cfg.eval.published_pr_tau == want[cfg.data.name], f.name
        assert cfg.model.name == next(b for k, b in backbones.items() if f.stem.startswith(k)), f.name


def test_a_run_on_a_device_copy_of_the_data_is_the_same_setting(tmp_path):
    import pickle

    import numpy as np

    # data.verify=false reads a copy made by benchmarks/device_data.py (checked there against the
    # official tensors): the same images, so its runs are seeds of the same setting
    from longtail.config import setting_key
    from longtail.data import load_benchmark

    def load_data(cfg):
        return load_benchmark(cfg.data)

    gala = CONFIGS / "cifar100_lt_if100_gala_reference.yaml"
    assert load_config(gala).data.verify is True
    off = load_config(gala, ["data.verify=false"])
    assert off.data.verify is False and setting_key(off) == setting_key(load_config(gala))
    # and the trainer hands it to the loader: a CIFAR folder whose pickles are not the official
    # files loads only with it off
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 50000), ("test", 100)):  # CIFAR-100's 500 training images per class, blank
        labels = np.repeat(np.arange(100), n // 100)
        (folder / name).write_bytes(pickle.dumps({"data": np.zeros((n, 3072), dtype=np.uint8),
                                                  "fine_labels": labels.tolist()}, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2))
    args = [f"data.root={tmp_path}"]
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_data(load_config(gala, args))
    assert len(load_data(load_config(gala, [*args, "data.verify=false"])).train) > 0


def test_the_compile_mode_is_how_a_run_is_made_not_its_setting():
    from longtail.config import experiment_settings, setting_key

    gala = CONFIGS / "cifar100_lt_if100_gala_reference.yaml"
    cpu = load_config(gala, ["compile=true"])
    gpu = load_config(gala, ["compile=true", "compile_mode=reduce-overhead", "device=cuda", "eval.batch_size=1000"])
    assert "compile_mode" not in experiment_settings(gpu)
    assert setting_key(cpu) == setting_key(gpu)
    # compiling or not stays part of the setting (fused kernels round differently)
    assert setting_key(cpu) != setting_key(load_config(gala, ["compile=false"]))
