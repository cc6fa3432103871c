"""Two-stream trunk: shapes per fusion, alignment, missing flow, gradients, late averaging, config errors."""
from __future__ import annotations

import math

import pytest
import torch

from detectors.backbone import BackboneConfig, build_backbone
from detectors.two_stream import TwoStreamConfig, TwoStreamTrunk, build_two_stream, late_average
from detectors.wildcat import Wildcat, WildcatConfig

torch.set_num_threads(1)
L = 3


def config(fusion: str = "conv", flow_width: float = 0.125, stride: int = 16, **kw) -> TwoStreamConfig:
    return TwoStreamConfig(appearance=BackboneConfig(width=0.125, output_stride=stride),
                           flow=BackboneConfig(width=flow_width, output_stride=stride, in_channels=2 * L),
                           flow_length=L, fusion=fusion, **kw)


def trunk(seed: int = 0, **kw) -> TwoStreamTrunk:
    torch.manual_seed(seed)
    return build_two_stream(config(**kw)).eval()


def inputs(b: int = 2, h: int = 32, w: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 2 * L, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize("fusion", ["conv", "sum", "late"])
@pytest.mark.parametrize("flow_width", [0.125, 0.25])  # 64 or 128 flow channels against 64
@pytest.mark.parametrize("stride", [16, 8])
def test_output_shape_stride_offset(fusion, flow_width, stride):
    t = trunk(fusion=fusion, flow_width=flow_width, stride=stride)
    assert (t.out_channels, t.stride, t.offset) == (64, stride, 0.0)
    images, flow = inputs(h=32, w=40)
    with torch.no_grad():
        out = t(images, flow)
        app, motion = t.forward_both(images, flow)
    grid = (math.ceil(32 / stride), math.ceil(40 / stride))
    assert out.shape == (2, 64, *grid) and app.shape == (2, 64, *grid)
    assert motion.shape == (2, 128 if fusion == "conv" and flow_width == 0.25 else 64, *grid)


@pytest.mark.parametrize("fusion", ["conv", "sum", "late"])
def test_missing_flow_is_a_zero_stack_and_real_flow_changes_the_output(fusion):
    t = trunk(fusion=fusion, flow_width=0.25)
    images, flow = inputs()
    with torch.no_grad():
        t.flow.bn1.bias.fill_(0.5)  # as after training: an untrained trunk maps zeros to zeros
        none = t(images)
        assert torch.equal(none, t(images, None))
        assert torch.equal(none, t(images, torch.zeros_like(flow)))
        moving = t(images, flow)
        app = t.appearance(images)
    if fusion == "late":  # forward is the appearance detector; the flow map comes from forward_both
        assert torch.equal(moving, app) and torch.equal(none, app)
    else:
        assert (moving - none).abs().max() > 1e-3
        assert (none - app).abs().max() > 1e-3  # zero flow is "no motion", not "no flow stream"


def test_conv_fusion_starts_as_the_sum_of_the_maps():
    """[I, I] initialisation (Feichtenhofer et al.): relu(A + F) = A + F for post-ReLU maps."""
    images, flow = inputs()
    with torch.no_grad():
        same = trunk(fusion="conv")
        a, f = same.forward_both(images, flow)
        assert a.min() >= 0 and f.min() >= 0
        torch.testing.assert_close(same(images, flow), a + f)
        wider = trunk(fusion="conv", flow_width=0.25)  # 128 flow channels: the first 64 are added
        a, f = wider.forward_both(images, flow)
        torch.testing.assert_close(wider(images, flow), a + f[:, :64])
        weight = wider.fuse[0].weight  # the fusion is a learnt 1x1 conv over all 192 channels
        assert weight.shape == (64, 192, 1, 1) and weight.requires_grad
        weight.normal_()  # as after training, weights of both signs: the ReLU keeps the map post-ReLU
        out = wider(images, flow)
        assert out.min() == 0 and (out > 0).any()


def test_sum_fusion_projects_only_when_channels_differ():
    images, flow = inputs()
    same = trunk(fusion="sum")
    assert isinstance(same.project, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(same(images, flow), same.appearance(images) + same.flow(flow))
        wider = trunk(fusion="sum", flow_width=0.25)
        proj = torch.relu(wider.project[0](wider.flow(flow)))
        torch.testing.assert_close(wider(images, flow), wider.appearance(images) + proj)


@pytest.mark.parametrize("fusion", ["conv", "sum"])
def test_gradient_reaches_both_trunks(fusion):
    t = trunk(fusion=fusion, flow_width=0.25).train()
    images, flow = inputs()
    out = t(images, flow)
    target = torch.rand(out.shape, generator=torch.Generator().manual_seed(5))
    ((out - target) ** 2).mean().backward()  # not out.sum(): train-mode BatchNorm makes a plain sum flat
    assert t.appearance.conv1.weight.grad.abs().sum() > 0
    assert t.flow.conv1.weight.grad.abs().sum() > 0
    if fusion == "conv":
        assert t.fuse[0].weight.grad.abs().sum() > 0


def test_late_average_of_one_head_over_both_maps():
    t = trunk(fusion="late", flow_width=0.25)
    images, flow = inputs()
    head = torch.nn.Conv2d(64, 2, 1)
    with torch.no_grad():
        app, motion = t.forward_both(images, flow)
        assert motion.shape == app.shape
        torch.testing.assert_close(late_average(head, app, motion), (head(app) + head(motion)) / 2)
    a, f = torch.tensor([[1.0, 4.0]]), torch.tensor([[3.0, -2.0]])
    pooled = lambda m: {"scores": m * 2, "name": "x"}  # noqa: E731  a dict head, WILDCAT-like
    averaged = late_average(pooled, a, f)
    assert set(averaged) == {"scores", "name"} and averaged["name"] == "x"
    torch.testing.assert_close(averaged["scores"], torch.tensor([[4.0, 2.0]]))
    torch.testing.assert_close(late_average(lambda m: m, a, f, flow_head=lambda m: -m), torch.tensor([[-1.0, 3.0]]))
    with pytest.raises(TypeError, match="head"):
        late_average(lambda m: [m], a, f)


def test_late_gradient_reaches_both_trunks():
    t = trunk(fusion="late").train()
    images, flow = inputs()
    head = torch.nn.Conv2d(64, 1, 1)
    out = late_average(head, *t.forward_both(images, flow))
    ((out - 1.0) ** 2).mean().backward()
    assert t.appearance.conv1.weight.grad.abs().sum() > 0 and t.flow.conv1.weight.grad.abs().sum() > 0


def test_plugs_into_wildcat_without_flow():
    """A backbone slot calls backbone(images): the two-stream trunk then runs with a zero flow stack."""
    model = Wildcat(trunk(fusion="conv"), WildcatConfig(classes=["drone", "bird"])).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out["scores"].shape == (2, 2) and out["maps"].shape == (2, 2, 2, 2)


def test_wildcat_passes_flow_to_the_trunk():
    torch.manual_seed(0)
    model = Wildcat(trunk(fusion="conv"), WildcatConfig()).eval()
    images, flow = torch.rand(2, 3, 32, 32), torch.rand(2, 2 * L, 32, 32) * 2 - 1
    with torch.no_grad():
        none, zeros, moving = model(images), model(images, torch.zeros_like(flow)), model(images, flow)
    torch.testing.assert_close(none["maps"], zeros["maps"])  # no flow = a zero flow stack
    assert not torch.allclose(moving["maps"], none["maps"])  # the flow reaches the maps
    model.train()
    model(images, flow)["scores"].sum().backward()
    assert model.backbone.flow.conv1.weight.grad.abs().sum() > 0


def test_flow_weight_file_is_loaded(tmp_path):
    torch.manual_seed(7)
    src = build_backbone(BackboneConfig(width=0.125, in_channels=2 * L))
    torch.save(src.state_dict(), tmp_path / "flow.pth")
    cfg = config()
    cfg.flow.weights = str(tmp_path / "flow.pth")
    t = build_two_stream(cfg)
    torch.testing.assert_close(t.flow.conv1.weight, src.conv1.weight)


def test_wrong_flow_shape_is_rejected():
    t = trunk()
    images, flow = inputs()
    with pytest.raises(ValueError, match=r"^flow: expected shape \(2, 6, 32, 32\)"):
        t(images, flow[:, :4])
    with pytest.raises(ValueError, match="^flow: "):
        t(images, flow[:, :, :16])


@pytest.mark.parametrize("change,key", [
    (lambda c: setattr(c.flow, "in_channels", 3), "flow.in_channels"),
    (lambda c: setattr(c, "flow_length", 5), "flow.in_channels"),
    (lambda c: setattr(c.flow, "output_stride", 8), "flow.output_stride"),
    (lambda c: setattr(c, "fusion", "max"), "fusion"),
    (lambda c: setattr(c, "flow_length", 0), "flow_length"),
    (lambda c: setattr(c.appearance, "width", 0.0), "appearance.width"),
])
def test_validate_names_the_key(change, key):
    cfg = config()
    cfg.validate("model.")
    change(cfg)
    with pytest.raises(ValueError, match=f"^model.{key}: "):
        cfg.validate("model.")
    with pytest.raises(ValueError, match=f"^{key}: "):
        TwoStreamTrunk(cfg)
