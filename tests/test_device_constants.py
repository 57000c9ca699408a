"""Host constants made once per device (longtail.data.device_constants). The "meta" device stands in
for a GPU here: a real second device, so the copy and the cache are exercised without one."""
import torch

from longtail.data.device_constants import constant, on_device


def test_a_host_constant_is_moved_once_per_device_and_left_alone_where_it_is():
    t = torch.tensor([1.0, 2.0, 3.0])
    assert on_device(t, "cpu") is t and on_device(t, torch.device("cpu")) is t
    moved = on_device(t, "meta")
    assert moved.device.type == "meta" and moved.shape == t.shape and moved.dtype == t.dtype
    assert on_device(t, torch.device("meta")) is moved  # the same tensor: no second copy
    other = torch.tensor([1.0, 2.0, 3.0])  # equal values, another constant: its own copy
    assert on_device(other, "meta") is not moved


def test_a_constant_is_made_once_per_values_dtype_and_device():
    a = constant((0.5, 0.25), torch.float32, "cpu")
    assert torch.equal(a, torch.tensor([0.5, 0.25])) and a.dtype == torch.float32
    assert constant((0.5, 0.25), torch.float32, torch.device("cpu")) is a
    assert constant((0.5, 0.25), torch.float64, "cpu") is not a
    assert constant((0.5, 0.26), torch.float32, "cpu") is not a
    meta = constant((0.5, 0.25), torch.float32, "meta")
    assert meta.device.type == "meta" and constant((0.5, 0.25), torch.float32, "meta") is meta
