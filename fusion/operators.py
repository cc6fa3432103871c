"""RGB-thermal fusion operators that survive a missing modality (Deeplomatics task 3.3).

Where the two cameras' information is joined:
- early: the registered images are stacked along channels before the first convolution
  (`early_concat`, `EarlyFusion`);
- intermediate: each modality has its own trunk; their feature maps (B, C_m, h, w), resampled onto one
  grid by the caller (same h, w), are joined by an operator: `ConcatFusion` (concatenation + 1x1 conv),
  `MutanFusion` (Tucker-decomposed bilinear fusion, Ben-younes et al., ICCV 2017) or `GatedMixture`
  (mixture of unimodal experts with gates renormalised over the present modalities, Miech et al. 2018,
  "Learning a text-video embedding from incomplete and heterogeneous data");
- late: each modality's model scores on its own and the scores are averaged (`late_fusion`).

Missing modalities. Every operator takes `present: (B, M) bool`, the per-sample availability: a frame
whose partner is None, or a sensor that is offline, is `present[b, m] = False`. The whole list entry may
be None (no tensor for anyone in the batch); then `present[:, m]` must be all False. The guarantee, for
every operator: a sample's output does not depend on the values of its absent modalities' tensors, even
NaN or inf ones. Inputs are cleaned with `torch.where` (never by multiplying with the mask, since
0 * NaN = NaN) *before* any layer sees them, so no NaN reaches the forward pass or the gradients of the
weights either. A sample with no modality present at all gets an exact zero output.

Design of the intermediate operators for incomplete samples:
- `ConcatFusion`: an absent modality's features are replaced by zeros and M constant channels holding the
  availability mask are appended, so the 1x1 conv can tell "thermal is off" from "thermal is dark" (it
  adds a learned offset per availability pattern). Output ReLU(conv([x_1, ..., x_M, mask])).
- `GatedMixture`: each modality m has an expert, proj_m (1x1 conv to `out` channels), and a gate logit
  a_m . GAP(x_m) + b_m (a Linear on its own globally pooled features: each modality rates how informative
  it is in this frame, e.g. thermal at night). The weights are the softmax of the logits over the present
  modalities only: absent ones weigh exactly 0 and the present ones sum to 1. Output
  sum_m w_m proj_m(x_m) (no activation; it is a building block).
- `MutanFusion`: MUTAN's product is only defined when all modalities are present (a zero factor would zero
  the whole interaction). Its output is ReLU(G(x) + [all present] * T(x)) where G is the gated mixture of
  unimodal experts above (always defined) and T the Tucker bilinear interaction term, switched on only for
  complete samples. So an incomplete sample gets the renormalised unimodal mixture, a complete one the
  mixture plus the cross-modal interactions, and modality dropout in training teaches both regimes.
  With M > 2 modalities T is the product of M rank-R factor projections (the natural extension of the
  2-modality Tucker core) and is likewise used only when all M are present.

MUTAN's interaction term at each position (Ben-younes et al., Eq. 9-10, with d = mutan_dim):
q_m = tanh(W_m x_m) in R^d (1x1 conv), z = sum_{r=1..R} prod_m (W_r^m q_m) in R^d (rank-R Tucker core,
the W_r^m are d x d without bias so z is a pure multilinear form), T = W_o z + b_o (1x1 conv to `out`).

Modality dropout (training only, when `dropout_p > 0`): each present modality of a sample is dropped with
probability p, independently; if that would drop all of a sample's present modalities, one of them, drawn
uniformly, is kept. A modality of a sample with k present is thus dropped with probability p - p^k / k.

Shapes: feats[m] (B, C_m, h, w) or None; present (B, M) bool; output (B, out, h, w).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPERATORS = ("early", "concat", "mutan", "gated", "late")


@dataclass
class FusionConfig:
    operator: Literal["early", "concat", "mutan", "gated", "late"]
    channels: list[int]  # per modality: feature channels (intermediate) or image channels (early)
    out_channels: int | None = None  # intermediate operators' output channels; None: channels[0]
    rank: int = 5  # MUTAN's R
    mutan_dim: int = 64  # MUTAN's projection size d
    dropout_p: float = 0.0  # modality dropout probability in training
    late_weights: list[float] | None = None  # late fusion: fixed per-modality weights (None: equal)

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(self.operator in OPERATORS, "operator", f"must be one of {', '.join(OPERATORS)}")
        check(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "channels",
              "give one channel count >= 1 per modality")
        check(self.operator != "mutan" or len(self.channels) >= 2, "channels",
              "mutan fuses at least two modalities")
        check(self.out_channels is None or self.out_channels >= 1, "out_channels", "must be >= 1")
        check(self.rank >= 1, "rank", "must be >= 1")
        check(self.mutan_dim >= 1, "mutan_dim", "must be >= 1")
        check(0.0 <= self.dropout_p < 1.0, "dropout_p", "must be in [0, 1)")
        if self.late_weights is not None:
            check(len(self.late_weights) == len(self.channels), "late_weights", "give one weight per modality")
            check(all(w >= 0 for w in self.late_weights) and sum(self.late_weights) > 0, "late_weights",
                  "weights must be >= 0 with a positive sum")

    @property
    def resolved_out_channels(self) -> int:
        return self.channels[0] if self.out_channels is None else self.out_channels


# ---------------------------------------------------------------------------------------------- masks


def present_mask(items: Sequence[Tensor | None], batch: int | None = None) -> Tensor:
    """(B, M) bool: True where the modality's tensor is given (whole-batch availability)."""
    ref = next((t for t in items if t is not None), None)
    if ref is None and batch is None:
        raise ValueError("all modalities are None: give batch")
    b = ref.shape[0] if ref is not None else batch
    device = ref.device if ref is not None else None
    col = torch.tensor([t is not None for t in items], dtype=torch.bool, device=device)
    return col.expand(b, len(items)).clone()


def modality_dropout(present: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Drop each present modality with probability p, never all of a sample's present ones (then one of
    them, uniformly drawn, is kept). present (B, M) bool -> (B, M) bool, a subset of present. The generator
    must live on present's device."""
    _check_present(present)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if p == 0.0:
        return present.clone()
    u = torch.rand(present.shape, generator=generator, device=present.device)
    keep = present & (u >= p)
    emptied = present.any(1) & ~keep.any(1)
    pick = torch.rand(present.shape, generator=generator, device=present.device)
    pick = torch.where(present, pick, -1.0).argmax(1)
    rescue = F.one_hot(pick, present.shape[1]).bool()
    return torch.where(emptied[:, None], rescue, keep)


def _check_present(present: Tensor, m: int | None = None) -> None:
    if not isinstance(present, Tensor) or present.dtype != torch.bool:
        raise TypeError("present must be a bool tensor (B, M)")
    if present.ndim != 2 or (m is not None and present.shape[1] != m):
        raise ValueError(f"present must be (B, {m or 'M'}), got {tuple(present.shape)}")


def _clean(items: Sequence[Tensor | None], present: Tensor, channels: Sequence[int] | None,
           spatial: bool = True) -> tuple[list[Tensor | None], Tensor]:
    """Check shapes and zero absent entries with torch.where. Returns (cleaned items, reference tensor)."""
    m = len(items)
    _check_present(present, m)
    ref = next((t for t in items if t is not None), None)
    if ref is None:
        raise ValueError("every modality is None: at least one tensor is needed for the output size")
    if present.shape[0] != ref.shape[0]:
        raise ValueError(f"present has {present.shape[0]} samples, the tensors {ref.shape[0]}")
    if present.device != ref.device:
        present = present.to(ref.device)
    out: list[Tensor | None] = []
    for i, t in enumerate(items):
        if t is None:
            if bool(present[:, i].any()):
                raise ValueError(f"modality {i} is None but marked present")
            out.append(None)
            continue
        if spatial and (t.ndim != 4 or t.shape[0] != ref.shape[0] or t.shape[2:] != ref.shape[2:]):
            raise ValueError(f"modality {i}: expected (B, C, h, w) matching {tuple(ref.shape)}, "
                             f"got {tuple(t.shape)} (align the maps first)")
        if not spatial and t.shape != ref.shape:
            raise ValueError(f"modality {i}: expected shape {tuple(ref.shape)}, got {tuple(t.shape)}")
        if channels is not None and t.shape[1] != channels[i]:
            raise ValueError(f"modality {i}: expected {channels[i]} channels, got {t.shape[1]}")
        where = present[:, i].view(-1, *([1] * (t.ndim - 1)))
        out.append(torch.where(where, t, torch.zeros((), dtype=t.dtype, device=t.device)))
    return out, ref


def _zero_empty(out: Tensor, present: Tensor) -> Tensor:
    """Exact zero output for samples with no modality present."""
    some = present.any(1).view(-1, *([1] * (out.ndim - 1)))
    return torch.where(some, out, torch.zeros((), dtype=out.dtype, device=out.device))


class _Fusion(nn.Module):
    """Shared part: the modality channel counts and training-time modality dropout."""

    def __init__(self, channels: Sequence[int], dropout_p: float = 0.0):
        super().__init__()
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError("channels: give one channel count >= 1 per modality")
        if not 0.0 <= dropout_p < 1.0:
            raise ValueError("dropout_p must be in [0, 1)")
        self.channels = list(channels)
        self.dropout_p = dropout_p

    def _train_mask(self, present: Tensor) -> Tensor:
        _check_present(present, len(self.channels))
        if self.training and self.dropout_p > 0:
            return modality_dropout(present, self.dropout_p)
        return present


# ---------------------------------------------------------------------------------------------- early


def early_concat(images: Sequence[Tensor | None], present: Tensor, channels: Sequence[int] | None = None,
                 with_mask: bool = True) -> Tensor:
    """Registered images (B, C_m, H, W) or None -> (B, sum C_m [+ M], H, W): absent images are zeros and,
    with_mask, M constant channels holding present[:, m] are appended (so the first convolution can tell a
    missing image from a black one). `channels` gives the size of None entries (default 3 each)."""
    chans = list(channels) if channels is not None else [3] * len(images)
    if len(chans) != len(images):
        raise ValueError("channels: give one count per image")
    clean, ref = _clean(images, present, channels)
    b, _, h, w = ref.shape
    parts = [t if t is not None else ref.new_zeros(b, c, h, w) for t, c in zip(clean, chans)]
    if with_mask:
        parts.append(present.to(device=ref.device, dtype=ref.dtype)[:, :, None, None].expand(b, -1, h, w))
    return torch.cat(parts, 1)


class EarlyFusion(_Fusion):
    """`early_concat` as a module (with modality dropout in training); out_channels = sum(C_m) + M: the
    in_channels of the trunk that follows."""

    def __init__(self, channels: Sequence[int], dropout_p: float = 0.0, with_mask: bool = True):
        super().__init__(channels, dropout_p)
        self.with_mask = with_mask
        self.out_channels = sum(self.channels) + (len(self.channels) if with_mask else 0)

    def forward(self, images: Sequence[Tensor | None], present: Tensor) -> Tensor:
        present = self._train_mask(present)
        return early_concat(images, present, self.channels, self.with_mask)


# ---------------------------------------------------------------------------------------------- late


def late_fusion(scores: Sequence[Tensor | None], present: Tensor,
                weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """Weighted average of the present modalities' scores (B, ...), weights renormalised per sample over
    the present ones. weights: None (equal), (M,) or (B, M), non-negative. A sample with no present
    modality (or zero total weight) gets 0."""
    clean, ref = _clean(scores, present, None, spatial=False)
    present = present.to(ref.device)
    b, m = present.shape
    if weights is None:
        w = ref.new_ones(b, m)
    else:
        w = torch.as_tensor(weights, dtype=ref.dtype, device=ref.device)
        if w.shape not in ((m,), (b, m)):
            raise ValueError(f"weights must be (M,) or (B, M) with M = {m}, got {tuple(w.shape)}")
        if bool((w < 0).any()):
            raise ValueError("weights must be >= 0")
        w = w.expand(b, m)
    w = torch.where(present, w, 0.0)
    total = w.sum(1)
    acc = torch.zeros_like(ref)
    view = (-1,) + (1,) * (ref.ndim - 1)
    for i, s in enumerate(clean):
        if s is not None:
            acc = acc + w[:, i].view(view) * s
    return torch.where(total.view(view) > 0, acc / total.clamp_min(torch.finfo(ref.dtype).tiny).view(view),
                       torch.zeros((), dtype=ref.dtype, device=ref.device))


class LateFusion(_Fusion):
    """`late_fusion` as a module with fixed weights (and modality dropout in training)."""

    def __init__(self, n_modalities: int, weights: Sequence[float] | None = None, dropout_p: float = 0.0):
        super().__init__([1] * n_modalities, dropout_p)
        self.weights = None if weights is None else list(weights)

    def forward(self, scores: Sequence[Tensor | None], present: Tensor) -> Tensor:
        return late_fusion(scores, self._train_mask(present), self.weights)


# ---------------------------------------------------------------------------------------------- intermediate


class GatedMixture(_Fusion):
    """Mixture of unimodal experts, gates renormalised over the present modalities (Miech et al. 2018).
    forward(feats, present) -> sum_m w_m proj_m(x_m), (B, out, h, w)."""

    def __init__(self, channels: Sequence[int], out_channels: int, dropout_p: float = 0.0):
        super().__init__(channels, dropout_p)
        self.out_channels = out_channels
        self.proj = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.channels)
        self.gate = nn.ModuleList(nn.Linear(c, 1) for c in self.channels)

    def _weights(self, clean: Sequence[Tensor | None], present: Tensor, ref: Tensor) -> Tensor:
        logits = torch.stack([g(x.mean((2, 3))).squeeze(1) if x is not None else ref.new_zeros(ref.shape[0])
                              for g, x in zip(self.gate, clean)], 1)
        logits = torch.where(present, logits.float(), torch.finfo(torch.float32).min)
        w = torch.where(present, torch.softmax(logits, 1), 0.0)  # exact 0 for absent modalities
        return (w / w.sum(1, keepdim=True).clamp_min(1e-30)).to(ref.dtype)  # rows without any: all 0

    def weights(self, feats: Sequence[Tensor | None], present: Tensor) -> Tensor:
        """Gate weights (B, M): 0 for absent modalities, the present ones sum to 1 (no dropout applied)."""
        clean, ref = _clean(feats, present, self.channels)
        return self._weights(clean, present.to(ref.device), ref)

    def mix(self, clean: Sequence[Tensor | None], present: Tensor, ref: Tensor) -> Tensor:
        """The mixture on already cleaned inputs (used by MutanFusion)."""
        w = self._weights(clean, present, ref)
        out = None
        for i, (p, x) in enumerate(zip(self.proj, clean)):
            if x is None:
                continue
            term = w[:, i, None, None, None] * p(x)
            out = term if out is None else out + term
        return out

    def forward(self, feats: Sequence[Tensor | None], present: Tensor) -> Tensor:
        present = self._train_mask(present)
        clean, ref = _clean(feats, present, self.channels)
        return self.mix(clean, present.to(ref.device), ref)


class ConcatFusion(_Fusion):
    """Intermediate concatenation: ReLU(conv1x1([x_1, ..., x_M, mask])), absent x_m = 0 and the M mask
    channels constant over space."""

    def __init__(self, channels: Sequence[int], out_channels: int, dropout_p: float = 0.0):
        super().__init__(channels, dropout_p)
        self.out_channels = out_channels
        self.conv = nn.Conv2d(sum(self.channels) + len(self.channels), out_channels, 1)

    def forward(self, feats: Sequence[Tensor | None], present: Tensor) -> Tensor:
        present = self._train_mask(present)
        x = early_concat(feats, present, self.channels, with_mask=True)
        return _zero_empty(F.relu(self.conv(x)), present.to(x.device))


class MutanFusion(_Fusion):
    """ReLU(gated mixture of unimodal experts + [all present] * MUTAN interaction), see the module doc."""

    def __init__(self, channels: Sequence[int], out_channels: int, rank: int = 5, mutan_dim: int = 64,
                 dropout_p: float = 0.0):
        super().__init__(channels, dropout_p)
        if len(self.channels) < 2:
            raise ValueError("MUTAN fuses at least two modalities")
        if rank < 1 or mutan_dim < 1:
            raise ValueError("rank and mutan_dim must be >= 1")
        self.out_channels, self.rank, self.mutan_dim = out_channels, rank, mutan_dim
        self.embed = nn.ModuleList(nn.Conv2d(c, mutan_dim, 1) for c in self.channels)
        self.factors = nn.ModuleList(nn.Conv2d(mutan_dim, rank * mutan_dim, 1, bias=False) for _ in self.channels)
        self.out = nn.Conv2d(mutan_dim, out_channels, 1)
        self.experts = GatedMixture(self.channels, out_channels)

    def joint(self, feats: Sequence[Tensor]) -> Tensor:
        """MUTAN interaction term T(x) (B, out, h, w) of complete inputs (every entry a tensor)."""
        b, _, h, w = feats[0].shape
        z = None
        for emb, fac, x in zip(self.embed, self.factors, feats):
            f = fac(torch.tanh(emb(x))).view(b, self.rank, self.mutan_dim, h, w)
            z = f if z is None else z * f
        return self.out(z.sum(1))

    def forward(self, feats: Sequence[Tensor | None], present: Tensor) -> Tensor:
        present = self._train_mask(present)
        clean, ref = _clean(feats, present, self.channels)
        present = present.to(ref.device)
        out = self.experts.mix(clean, present, ref)
        complete = present.all(1)
        if bool(complete.any()):  # then every entry is a tensor
            out = out + torch.where(complete[:, None, None, None], self.joint(clean),
                                    torch.zeros((), dtype=out.dtype, device=out.device))
        return _zero_empty(F.relu(out), present)


def build_fusion(cfg: FusionConfig) -> nn.Module:
    """The operator the config names, with its modality dropout."""
    cfg.validate()
    out = cfg.resolved_out_channels
    if cfg.operator == "early":
        return EarlyFusion(cfg.channels, cfg.dropout_p)
    if cfg.operator == "late":
        return LateFusion(len(cfg.channels), cfg.late_weights, cfg.dropout_p)
    if cfg.operator == "concat":
        return ConcatFusion(cfg.channels, out, cfg.dropout_p)
    if cfg.operator == "gated":
        return GatedMixture(cfg.channels, out, cfg.dropout_p)
    return MutanFusion(cfg.channels, out, cfg.rank, cfg.mutan_dim, cfg.dropout_p)
