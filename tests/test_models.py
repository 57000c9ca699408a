"""Models: parameter counts against analytic / torchvision counts, shapes, heads, channels_last,
pretrained loading with torchvision-style names."""
import pytest
import torch

from longtail.heads import CosineHead, LinearHead
from longtail.models import (
    IMAGENET_BACKBONES,
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    Classifier,
    available_models,
    build_model,
)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def conv(cin, cout, k, groups=1):
    return cin // groups * cout * k * k


def bn(c):
    return 2 * c


def resnet32_count(num_classes):
    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(5):  # option-A shortcuts have no parameters
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            cin = width
    return total + 64 * num_classes + num_classes


def imagenet_resnet_count(block, layers, num_classes, groups=1, width_per_group=64):
    total = conv(3, 64, 7) + bn(64)
    cin = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for b in range(blocks):
            if block == "basic":
                out = planes
                total += conv(cin, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            else:
                width = int(planes * width_per_group / 64) * groups
                out = planes * 4
                total += conv(cin, width, 1) + bn(width) + conv(width, width, 3, groups) + bn(width) \
                    + conv(width, out, 1) + bn(out)
            if b == 0 and (i > 0 or cin != out):
                total += conv(cin, out, 1) + bn(out)
            cin = out
    return total + cin * num_classes + num_classes


def test_registry_lists_all_models():
    assert set(available_models()) >= {"resnet32", "resnet10", "resnet18", "resnet34", "resnet50", "resnet101",
                                       "resnet152", "resnext50_32x4d", "convnet"}
    assert set(IMAGENET_BACKBONES) <= set(available_models())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vit_huge", 10)


def test_resnet32_parameter_count_and_forward():
    m = build_model("resnet32", 100)
    assert n_params(m) == resnet32_count(100)
    assert abs(n_params(m) - 0.47e6) < 0.005e6  # the published "0.47M"
    assert m.feature_dim == 64 and isinstance(m.head, LinearHead)
    x = torch.randn(3, 3, 32, 32)
    assert m(x).shape == (3, 100) and m.features(x).shape == (3, 64)
    # option-A shortcut: stage 2's first block has no projection parameters
    assert not any(p.numel() for p in m.backbone.layer2[0].shortcut.parameters())


@pytest.mark.parametrize("name,block,layers,kw,published", [
    ("resnet10", "basic", (1, 1, 1, 1), {}, None),
    ("resnet18", "basic", (2, 2, 2, 2), {}, 11_689_512),
    ("resnet34", "basic", (3, 4, 6, 3), {}, 21_797_672),
    ("resnet50", "bottleneck", (3, 4, 6, 3), {}, 25_557_032),
    ("resnet101", "bottleneck", (3, 4, 23, 3), {}, 44_549_160),
    ("resnet152", "bottleneck", (3, 8, 36, 3), {}, 60_192_808),
    ("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), {"groups": 32, "width_per_group": 4}, 25_028_904),
])
def test_imagenet_parameter_counts_and_forward(name, block, layers, kw, published):
    m = build_model(name, 1000)
    count = n_params(m)
    assert count == imagenet_resnet_count(block, layers, 1000, **kw)
    if published is not None:
        assert count == published  # torchvision's count
    else:
        assert abs(count - 5.4e6) < 0.1e6
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert m.feature_dim == (512 if block == "basic" else 2048)


def test_convnet_digits_and_grayscale():
    m = build_model("convnet", 10, in_channels=1)
    assert m(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert n_params(m) < 200_000
    m32 = build_model("resnet32", 10, in_channels=1)
    assert m32(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cosine_head_bounded_by_scale():
    m = build_model("resnet32", 10, head="cosine", scale=16.0)
    assert isinstance(m.head, CosineHead)
    z = m(torch.randn(4, 3, 32, 32) * 5)
    assert z.abs().max() <= 16.0 + 1e-4
    f = m.features(torch.randn(4, 3, 32, 32))
    w = m.head.weight
    ref = 16.0 * (f / f.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()
    torch.testing.assert_close(m.head(f), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,size", [("resnet32", 32), ("resnet10", 64), ("convnet", 8)])
def test_channels_last_matches_contiguous(name, size):
    torch.manual_seed(0)
    m = build_model(name, 7).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = m(x)
        m_cl = m.to(memory_format=torch.channels_last)
        out = m_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_train_step_changes_backbone_and_head():
    torch.manual_seed(0)
    m = build_model("resnet32", 5)
    before = [p.detach().clone() for p in (m.backbone.conv1.weight, m.head.weight)]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(m(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, (m.backbone.conv1.weight, m.head.weight)))


def torchvision_style_state(model):
    """A state dict named like torchvision's resnet (backbone names + fc.*)."""
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, model.feature_dim)
    state["fc.bias"] = torch.randn(1000)
    return state


def test_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    src = build_model("resnet10", 1000)
    for p in src.backbone.parameters():  # make the weights distinctive
        p.data.normal_()
    state = torchvision_style_state(src)
    assert "layer1.0.conv1.weight" in state and "layer2.0.downsample.0.weight" in state and "bn1.running_mean" in state
    path = tmp_path / "resnet10.pth"
    torch.save(state, path)
    dst = build_model("resnet10", 37, head="cosine", pretrained=str(path))
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v), k
    assert dst.head.weight.shape == (37, 512)
    # wrapped and DDP-prefixed checkpoints load too
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    again = build_model("resnet10", 3, pretrained=str(tmp_path / "wrapped.pth"))
    assert torch.equal(again.backbone.conv1.weight, src.backbone.conv1.weight)


def test_pretrained_wrong_names_or_shapes_fail_clearly(tmp_path):
    state = torchvision_style_state(build_model("resnet10", 10))
    bad = {k.replace("layer1", "stage1"): v for k, v in state.items()}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing: .*layer1.*unexpected: .*stage1"):
        build_model("resnet10", 10, pretrained=str(tmp_path / "bad.pth"))
    # a ResNet-50 file into a ResNet-10
    torch.save(torchvision_style_state(build_model("resnet50", 10)), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="do not match"):
        build_model("resnet10", 10, pretrained=str(tmp_path / "r50.pth"))
    with pytest.raises(FileNotFoundError):
        build_model("resnet10", 10, pretrained=str(tmp_path / "nope.pth"))


def test_classifier_wraps_any_backbone():
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    backbone.num_features = 6
    m = Classifier(backbone, LinearHead(6, 2))
    assert m(torch.randn(3, 3, 2, 2)).shape == (3, 2) and m.feature_dim == 6


def test_mlp_matches_an_independent_computation_and_has_no_batchnorm():
    torch.manual_seed(0)
    m = build_model("mlp", 10, in_channels=1)
    assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    x = torch.randn(4, 1, 16, 16)
    lin = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    pooled = x.reshape(4, 1, 8, 2, 8, 2).mean(dim=(3, 5)).reshape(4, 64)  # 2x2 average pooling to 8x8
    h = torch.relu(pooled @ lin[0].weight.T + lin[0].bias)
    h = torch.relu(h @ lin[1].weight.T + lin[1].bias)
    torch.testing.assert_close(m(x), h @ lin[2].weight.T + lin[2].bias)


# torchvision's layouts, written out here from its resnet.py: block kind, blocks per stage, groups, width per group
TORCHVISION_LAYOUTS = {
    "resnet10": ("basic", (1, 1, 1, 1), 1, 64),
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
}


def torchvision_file_shapes(name, counters):
    """{name: shape} of a torchvision ImageNet state dict for this layout, fc included. ``counters``:
    whether batch norms carry num_batches_tracked (the files of ResNet-18 to 152 predate it)."""
    block, layers, groups, width_per_group = TORCHVISION_LAYOUTS[name]
    shapes = {}

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                       f"{prefix}.running_var": (c,)})
        if counters:
            shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    cin = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            if block == "basic":
                out = planes
                shapes[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                width, out = int(planes * width_per_group / 64) * groups, planes * 4
                shapes[f"{p}.conv1.weight"] = (width, cin, 1, 1)
                bn(f"{p}.bn1", width)
                shapes[f"{p}.conv2.weight"] = (width, width // groups, 3, 3)
                bn(f"{p}.bn2", width)
                shapes[f"{p}.conv3.weight"] = (out, width, 1, 1)
                bn(f"{p}.bn3", out)
            if b == 0 and (stage > 1 or cin != out):
                shapes[f"{p}.downsample.0.weight"] = (out, cin, 1, 1)
                bn(f"{p}.downsample.1", out)
            cin = out
    shapes["fc.weight"], shapes["fc.bias"] = (1000, cin), (1000,)
    return shapes


def torchvision_file(name, counters, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 1000, shape, generator=gen) if k.endswith("num_batches_tracked")
            else torch.randn(shape, generator=gen) for k, shape in torchvision_file_shapes(name, counters).items()}


@pytest.mark.parametrize("name", IMAGENET_BACKBONES)
def test_torchvision_imagenet_layout_loads_into_every_imagenet_backbone(tmp_path, name):
    # the published ResNet-18..152 files have no num_batches_tracked; newer ones (ResNeXt) have it
    counters = name in ("resnet10", "resnext50_32x4d")
    state = torchvision_file(name, counters)
    torch.save(state, tmp_path / f"{name}.pth")
    model = build_model(name, 5, pretrained=str(tmp_path / f"{name}.pth"))
    loaded = model.backbone.state_dict()
    assert {k for k in loaded if not k.endswith("tracked")} == {k for k in state if not k.startswith("fc.")
                                                                and not k.endswith("tracked")}
    for k, v in loaded.items():
        # a counter the file lacks stays the new model's own: 0
        assert torch.equal(v, state[k] if k in state else torch.tensor(0)), k
    assert model.head.weight.shape == (5, state["fc.weight"].shape[1])


def test_torchvision_file_with_a_missing_tensor_or_wrong_depth_fails_clearly(tmp_path):
    state = torchvision_file("resnet18", counters=False)
    del state["layer3.1.bn2.running_var"]
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"do not match backbone ResNet.*missing: layer3\.1\.bn2\.running_var"):
        build_model("resnet18", 5, pretrained=str(tmp_path / "r18.pth"))
    torch.save(torchvision_file("resnet18", counters=False), tmp_path / "r18_ok.pth")
    with pytest.raises(ValueError, match=r"missing: layer1\.2\.bn1\.bias"):  # a ResNet-18 file into a ResNet-34
        build_model("resnet34", 5, pretrained=str(tmp_path / "r18_ok.pth"))


def test_pretrained_normalisation_is_torchvisions_imagenet_statistics():
    assert PRETRAINED_MEAN == (0.485, 0.456, 0.406) and PRETRAINED_STD == (0.229, 0.224, 0.225)
