"""ResNet trunks: output strides and sizes, torchvision equivalence, weight files."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detectors.backbone import BackboneConfig, build_backbone, load_weights


def trunk(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(BackboneConfig(**kw)).eval()


@pytest.mark.parametrize("depth,stride", [(18, 16), (18, 8), (34, 16), (50, 8)])
def test_fully_convolutional_output_size(depth, stride):
    t = trunk(depth=depth, width=0.125, output_stride=stride)
    assert t.stride == stride and t.out_channels == (256 if depth == 50 else 64)  # 512 * width (* 4)
    for h, w in ((37, 50), (64, 64), (97, 33)):
        with torch.no_grad():
            y = t(torch.rand(1, 3, h, w))
        assert y.shape == (1, t.out_channels, math.ceil(h / stride), math.ceil(w / stride))


def test_width_one_is_torchvision_resnet():
    """Same keys and shapes as torchvision's resnet (fc.* aside); with layer4 dilated, the same function
    as torchvision's resnet50(replace_stride_with_dilation=[False, False, True])."""
    t = trunk(depth=50, width=1.0, output_stride=16)
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    own = t.state_dict()
    assert {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("fc.")} == \
        {k: v.shape for k, v in own.items()}
    ref.load_state_dict({**ref.state_dict(), **own})
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(ref.children())[:-2])(x)
        torch.testing.assert_close(t(x), feats)
    assert trunk(depth=18, width=1.0).out_channels == 512


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_weight_file_round_trip(tmp_path, wrap):
    src = trunk(seed=1, width=0.25)
    for m in src.modules():  # non-trivial running statistics, so they must load too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    state = src.state_dict()
    state["fc.weight"] = torch.zeros(10, 128)  # a torchvision classifier head is ignored
    path = tmp_path / "w.pth"
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, path)
    x = torch.rand(2, 3, 48, 64)
    dst = trunk(seed=2, width=0.25)
    with torch.no_grad():
        assert not torch.allclose(dst(x), src(x))
        load_weights(dst, path)
        torch.testing.assert_close(dst(x), src(x), atol=0, rtol=0)
        built = build_backbone(BackboneConfig(width=0.25, weights=str(path))).eval()
        torch.testing.assert_close(built(x), src(x), atol=0, rtol=0)


def test_weight_file_errors(tmp_path):
    t = trunk(width=0.25)
    wide = tmp_path / "wide.pth"
    torch.save(trunk(width=0.5).state_dict(), wide)
    with pytest.raises(ValueError, match=r"wide\.pth: .*shape: conv1\.weight \(32, 3, 7, 7\) != \(16, 3, 7, 7\)"):
        load_weights(t, wide)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"garbage\.pth: not a readable weight file"):
        load_weights(t, garbage)
    with pytest.raises(ValueError, match=r"absent\.pth: no such weight file"):
        load_weights(t, tmp_path / "absent.pth")
    notes = tmp_path / "notes.pth"
    torch.save({"lr": 0.1, "epochs": 3}, notes)
    with pytest.raises(ValueError, match=r"notes\.pth: not a state_dict"):
        load_weights(t, notes)
    state = t.state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ValueError, match=r"partial\.pth: .*missing: layer4\.0\.conv1\.weight"):
        load_weights(t, partial)
    extra = tmp_path / "extra.pth"
    torch.save({**state, "head.weight": torch.zeros(3)}, extra)
    with pytest.raises(ValueError, match=r"extra\.pth: .*unexpected: head\.weight"):
        load_weights(t, extra)


@pytest.mark.parametrize("kw,key", [({"width": 0.0}, "width"), ({"in_channels": 0}, "in_channels"),
                                    ({"weights": " "}, "weights")])
def test_validate(kw, key):
    with pytest.raises(ValueError, match=rf"^backbone\.{key}: "):
        BackboneConfig(**kw).validate("backbone.")
    BackboneConfig().validate("backbone.")
