"""Writes one YAML per published setting into this folder: `python configs/_generate.py`.

The YAML files are the product (read them, copy them, override any key); this script only keeps
the many CIFAR variants consistent with the two recipes of SPEC section 5.
"""
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

# SPEC section 5, "as released with GALA": ResNet-32, batch 64, wd 5e-4, lr 0.05 then 0.1, cosine, AutoAugment+Cutout.
GALA_RECIPE = {
    "optim": {"epochs": 200, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "cosine", "warmup_epochs": 2, "drop_last": True},
    "data_augment": "autoaugment",
}
# SPEC section 5, LDAM-DRW style: batch 128, wd 2e-4, 5 warm-up epochs, x0.01 at 160, x0.0001 at 180, crop+flip.
LDAM_RECIPE = {
    "optim": {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
              "schedule": "step", "warmup_epochs": 5, "milestones": [160, 180], "step_factors": [0.01, 0.0001],
              "drop_last": False},
    "data_augment": "crop_flip",
}

# method -> (recipe, loss section). Which recipe: LDAM-DRW style where the published CIFAR numbers used
# it (and ALA); the GALA release recipe for GALA and the prior-aware baselines it is compared with
# (bs, la, gcl), so those differ only in the loss (configs/README.md).
CIFAR_METHODS = {
    "ce": (LDAM_RECIPE, {"name": "ce"}),
    "focal": (LDAM_RECIPE, {"name": "focal", "gamma": 1.0}),
    "cb": (LDAM_RECIPE, {"name": "cb", "beta": 0.9999}),
    "drw": (LDAM_RECIPE, {"name": "ce", "drw_epoch": 160, "drw_beta": 0.9999}),
    "ldam_drw": (LDAM_RECIPE, {"name": "ldam", "max_margin": 0.5, "scale": 30.0, "drw_epoch": 160}),
    "ala": (LDAM_RECIPE, {"name": "ala", "scale": 30.0, "normalise_qf": True, "drw_epoch": 160}),
    "bs": (GALA_RECIPE, {"name": "bs"}),
    "la": (GALA_RECIPE, {"name": "la", "tau": 1.0}),
    "gcl": (GALA_RECIPE, {"name": "gcl", "scale": 30.0}),
    "gala_paper": (GALA_RECIPE, {"name": "gala", "lambda1": 1.2, "lambda2": 0.9, "mode": "paper"}),
    "gala_reference": (GALA_RECIPE, {"name": "gala", "lambda1": 1.2, "lambda2": 0.9, "mode": "reference"}),
}
# LA and GALA reference again in the LDAM-DRW recipe, the same loss section: LA's published CIFAR figure
# (Menon et al.'s 43.9) used crop + flip and a step schedule too (over 1,419 epochs), so these tell
# the loss from the recipe.
CIFAR_METHODS.update({f"{m}_ldam_recipe": (LDAM_RECIPE, CIFAR_METHODS[m][1]) for m in ("la", "gala_reference")})

# GCL's own first stage as released (Keke921/GCLLoss, cifar_train_backbone.py): the same GCL loss
# (scale 30, noise 0.5, no margin) on the cosine head, but mixup (alpha 1) on crop + flip, batch 64,
# weight decay 2e-4, 5 linear warm-up epochs and lr x0.1 at epoch 160, x0.01 at 180, every batch
# kept. Our `gcl` config trains in the GALA recipe instead, so only the loss differs from GALA's.
GCL_RECIPE = {
    "optim": {"epochs": 200, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
              "schedule": "step", "warmup_epochs": 5, "milestones": [160, 180], "step_factors": [0.1, 0.01],
              "drop_last": False, "mixup_alpha": 1.0},
    "data_augment": "crop_flip",
}
CIFAR_METHODS["gcl_own_recipe"] = (GCL_RECIPE, CIFAR_METHODS["gcl"][1])

# Weight balancing (Alshammari et al., CVPR 2022; ShadeAlsha/LTR-weight-balancing, demo1 and demo2):
# stage one is cross-entropy with a tuned, large weight decay (5e-3), lr 0.01, batch 64, cosine to 0
# over 320 epochs with no warm-up, crop + flip; stage two re-trains the classifier of that run on its
# frozen features for 10 epochs, lr 0.01 cosine, weight decay 0.1, with class-balanced weights
# (beta 0.9999) and MaxNorm, each class vector projected into the ball of radius a tenth of the way
# from the shortest to the longest at the start (the release's threshold 0.1).
WB_RECIPE = {
    "optim": {"epochs": 320, "batch_size": 64, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-3,
              "schedule": "cosine", "warmup_epochs": 0, "drop_last": False},
    "data_augment": "crop_flip",
}
WB_STAGE_TWO = {
    "optim": {"epochs": 10, "batch_size": 64, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.1,
              "schedule": "cosine", "warmup_epochs": 0, "drop_last": False, "max_norm": 0.1},
    "data_augment": "crop_flip",
    "model": {"init_from": None, "freeze_backbone": True},
}
CIFAR_METHODS["wb"] = (WB_RECIPE, {"name": "ce"})
CIFAR_METHODS["wb_stage2"] = (WB_STAGE_TWO, {"name": "cb", "beta": 0.9999})

# GCL's second stage as released (Keke921/GCLLoss, cifar_train_classifier.py): the stage-one network
# with its backbone frozen (batch-norm statistics too), the cosine classifier re-trained for 30
# epochs on class-balanced draws with mixup (alpha 1), crop + flip, batch 64, SGD momentum 0.9,
# weight decay 2e-4, lr 0.008 cosine to 0 (its schedule: 0.2 x 0.1 x 0.2 x (1 + cos)), and GCL with
# margin 0.1, focal gamma 1 and scale 20. Give the stage-one run with model.init_from=RUN_FOLDER.
GCL_STAGE_TWO = {
    "optim": {"epochs": 30, "batch_size": 64, "lr": 0.008, "momentum": 0.9, "weight_decay": 2e-4,
              "schedule": "cosine", "warmup_epochs": 0, "drop_last": False, "mixup_alpha": 1.0},
    "data_augment": "crop_flip",
    "data": {"sampler": "class_balanced"},
    "model": {"init_from": None, "freeze_backbone": True},
}
CIFAR_METHODS["gcl_stage2"] = (GCL_STAGE_TWO, {"name": "gcl", "scale": 20.0, "noise_mul": 0.5, "margin": 0.1,
                                               "focal_gamma": 1.0})
# The same second stage for a first stage trained in GCL's own recipe (the queue names the first
# stage after the config: <first>_stage2 starts from <first>'s run).
CIFAR_METHODS["gcl_own_recipe_stage2"] = CIFAR_METHODS["gcl_stage2"]

# The folder data.root must hold (longtail.data.cifar.CIFAR_INFO): the official archives' folder names.
CIFAR_FOLDERS = {"cifar10-lt": "cifar-10-batches-py/", "cifar100-lt": "cifar-100-python/"}

HEADER = ("# {title}\n# Generated by configs/_generate.py. Run: longtail train {name} (from any folder)\n"
          "# {data}\n")
CIFAR_DATA = "Data: data.root=DIR or the environment variable LONGTAIL_DATA, DIR holding {what}"
LARGE_DATA = ("Data: data.root=DIR, DIR holding {what};\n# data.train_list=SPLITS, the folder of the standard "
              "split lists (ImageNet_LT/, Places_LT/, iNaturalist18/)")


def cifar_config(dataset: str, imb: int, method: str) -> dict:
    recipe, loss = CIFAR_METHODS[method]
    return {
        "data": {"name": dataset, "imb_factor": imb, "val_per_class": 20,
                 "image_size": 32, "augment": recipe["data_augment"], **recipe.get("data", {})},
        "model": {"name": "resnet32", **recipe.get("model", {})},
        "loss": dict(loss),
        "optim": dict(recipe["optim"]),
        "eval": {"every": 1, "track_test": True, "published_pr_tau": 1.0},
        "seed": 0,
        "precision": "auto",
        "channels_last": True,
        "out_dir": "runs",
    }


LARGE = {
    # name: (dataset, backbone, published PR tau, what the root holds, optim)
    "imagenet_lt_resnet50": ("imagenet-lt", "resnet50", 1.7, "the ImageNet train/ and val/ folders",
                             {"epochs": 90, "batch_size": 256, "lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 5}),
    "imagenet_lt_resnext50": ("imagenet-lt", "resnext50_32x4d", 1.7, "the ImageNet train/ and val/ folders",
                              {"epochs": 90, "batch_size": 256, "lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 5}),
    "inat2018_resnet50": ("inat2018", "resnet50", 1.5, "the iNaturalist 2018 train_val2018/ folder",
                          {"epochs": 90, "batch_size": 256, "lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5}),
    "places_lt_resnet152": ("places-lt", "resnet152", 1.4, "the Places365 train/ and val/ folders",
                            {"epochs": 30, "batch_size": 256, "lr": 0.01, "weight_decay": 5e-4, "warmup_epochs": 0}),
}
LARGE_METHODS = {
    "ce": {"name": "ce"},
    "la": {"name": "la", "tau": 1.0},
    "ala": {"name": "ala", "scale": 30.0},
    "gala_reference": {"name": "gala", "lambda1": 1.2, "lambda2": 0.9, "mode": "reference"},
    "gala_paper": {"name": "gala", "lambda1": 1.2, "lambda2": 0.9, "mode": "paper"},
}
# GALA's release trains list datasets with reflect padding and RandAugment on top of the usual recipe
# (its data/dataloader.py); the other methods keep the usual one.
LARGE_AUGMENT = {"gala_reference": "imagenet_randaugment", "gala_paper": "imagenet_randaugment"}
# The split lists are found by their standard names in the folder given as data.train_list (or in
# data.root, or data.root/splits). iNaturalist 2018 has no separate test set: the official val list is
# the test set. There is no validation list either, so no checkpoint or post-hoc tau is selected: the
# last epoch is reported and PR is only available in its transductive form unless you give data.val_list.


def large_config(key: str, method: str) -> dict:
    dataset, backbone, tau, _, optim = LARGE[key]
    model = {"name": backbone}
    if dataset == "places-lt":
        model["pretrained"] = None  # path to a torchvision-format ImageNet ResNet-152 state dict (recommended)
    return {
        "data": {"name": dataset, "image_size": 224, "resize": 256, "augment": LARGE_AUGMENT.get(method, "imagenet"), "workers": 8},
        "model": model,
        "loss": dict(LARGE_METHODS[method]),
        "optim": {"momentum": 0.9, "schedule": "cosine", "drop_last": True, **optim},
        "eval": {"every": 5, "track_test": False, "published_pr_tau": tau, "batch_size": 256},
        "seed": 0, "precision": "auto", "channels_last": True, "out_dir": "runs",
    }


def write(name: str, cfg: dict, title: str, data: str) -> None:
    file = f"{name}.yaml"
    text = HEADER.format(title=title, name=name, data=data)
    if cfg["model"].get("freeze_backbone"):
        first = file.replace("_stage2", "")
        text += (f"# Second stage: give the first stage's run folder (trained with {first}),\n"
                 f"# e.g. longtail train {name} model.init_from=runs/RUN seed=S (S: that run's seed).\n")
    if "pretrained" in cfg["model"]:
        text += ("# The published results start from ImageNet weights: set model.pretrained to a\n"
                 "# torchvision-format ImageNet state dict of this backbone (null trains from scratch).\n")
    text += yaml.safe_dump(cfg, sort_keys=False)
    (HERE / file).write_text(text)


def main() -> None:
    for dataset, short in (("cifar10-lt", "cifar10_lt"), ("cifar100-lt", "cifar100_lt")):
        for imb in (10, 50, 100, 200):
            for method in CIFAR_METHODS:
                write(f"{short}_if{imb}_{method}", cifar_config(dataset, imb, method),
                      f"{dataset.upper()} IF{imb}, {method}", CIFAR_DATA.format(what=CIFAR_FOLDERS[dataset]))
    for key, (_, _, _, what, _) in LARGE.items():
        for method in LARGE_METHODS:
            write(f"{key}_{method}", large_config(key, method), f"{key}, {method}", LARGE_DATA.format(what=what))


if __name__ == "__main__":
    main()
