"""Temporal smoothing, the seed's "recurrent networks": two options, to be compared by measurement.

1. `ConvGRU` over (fused) feature maps (Ballas et al., ICLR 2016: a GRU whose matrix products are
   convolutions, so the state keeps its spatial layout). One step, with * a k x k 'same' convolution:
       z = sigmoid(W_z * x + U_z * h + b_z)          update gate
       r = sigmoid(W_r * x + U_r * h + b_r)          reset gate
       n = tanh(W_n * x + b_n + U_n * (r . h))       candidate
       h' = (1 - z) . h + z . n                      (z = 0 keeps the old state)
   x (B, C_in, h, w), h (B, C_hid, h, w). `ConvGRU.forward` runs a sequence (T, B, C_in, h, w) from a
   zero (or given) state; `ConvGRU.step` runs one frame of a stream, keeping the state between calls
   (detached: for streaming inference) and restarting from zero on `reset()`, `step(x, reset=True)` or
   when the batch size or map size changes.
2. `ScoreFilter`: a recurrent filter of per-track detection scores, exponential smoothing per track id:
       s_t = score_t                        on the track's first observation,
       s_t = alpha * score_t + (1 - alpha) * s_prev   afterwards,
   where s_prev is the value at the track's last observation (missed updates do not decay it). A track
   missing from `max_missed` consecutive updates is forgotten (a later detection with its id starts
   afresh). Negative ids (detections not yet in a track) pass through unsmoothed.

On a moving turret a recurrent state must follow the image: `warp_maps` carries the previous frame's maps
onto the current grid with the turret's homography, and `RecurrentMaps` runs option 1 on a trained
detector's fused maps (tools/bench_temporal.py trains and measures it against option 2).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvGRUCell(nn.Module):
    """forward(x (B, C_in, h, w), h (B, C_hid, h, w) or None = zeros) -> h' (B, C_hid, h, w)."""

    def __init__(self, in_ch: int, hidden_ch: int, kernel: int = 3):
        super().__init__()
        if in_ch < 1 or hidden_ch < 1:
            raise ValueError("in_ch and hidden_ch must be >= 1")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 1, got {kernel}")
        self.in_ch, self.hidden_ch = in_ch, hidden_ch
        pad = kernel // 2
        self.gates = nn.Conv2d(in_ch + hidden_ch, 2 * hidden_ch, kernel, padding=pad)  # z, r
        self.cand_x = nn.Conv2d(in_ch, hidden_ch, kernel, padding=pad)
        self.cand_h = nn.Conv2d(hidden_ch, hidden_ch, kernel, padding=pad, bias=False)

    def init_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_ch, *x.shape[2:])

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"x must be (B, {self.in_ch}, h, w), got {tuple(x.shape)}")
        if h is None:
            h = self.init_state(x)
        elif h.shape != (x.shape[0], self.hidden_ch, *x.shape[2:]):
            raise ValueError(f"state shape {tuple(h.shape)} does not match input {tuple(x.shape)}")
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.cand_x(x) + self.cand_h(r * h))
        return (1 - z) * h + z * n


class ConvGRU(nn.Module):
    """A ConvGRU layer: forward(seq (T, B, C_in, h, w), h0=None) -> (outputs (T, B, C_hid, h, w), h_T);
    step(x (B, C_in, h, w), reset=False) -> h (B, C_hid, h, w) with the state kept between calls."""

    def __init__(self, in_ch: int, hidden_ch: int, kernel: int = 3):
        super().__init__()
        self.cell = ConvGRUCell(in_ch, hidden_ch, kernel)
        self.out_channels = hidden_ch
        self.state: Tensor | None = None

    def forward(self, seq: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if seq.ndim != 5:
            raise ValueError(f"seq must be (T, B, C, h, w), got {tuple(seq.shape)}")
        h, outs = h0, []
        for x in seq.unbind(0):
            h = self.cell(x, h)
            outs.append(h)
        return torch.stack(outs, 0), h

    def reset(self) -> None:
        self.state = None

    def step(self, x: Tensor, reset: bool = False) -> Tensor:
        s = self.state
        if reset or s is None or s.shape[0] != x.shape[0] or s.shape[2:] != x.shape[2:] \
                or s.device != x.device or s.dtype != x.dtype:
            s = None
        h = self.cell(x, s)
        self.state = h.detach()
        return h


class ScoreFilter:
    """Per-track exponential smoothing of scores; update(track_ids (N,), scores (N,)) -> smoothed (N,)."""

    def __init__(self, alpha: float = 0.5, max_missed: int = 10):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if max_missed < 1:
            raise ValueError(f"max_missed must be >= 1, got {max_missed}")
        self.alpha, self.max_missed = alpha, max_missed
        self.reset()

    def reset(self) -> None:
        self.step = 0
        self._tracks: dict[int, tuple[float, int]] = {}  # id -> (smoothed score, step last seen)

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, track_id: int) -> bool:
        return int(track_id) in self._tracks

    def update(self, track_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        ids = np.asarray(track_ids)
        vals = np.asarray(scores)
        if ids.ndim != 1 or vals.shape != ids.shape:
            raise ValueError(f"track_ids and scores must be 1-D of one length, got {ids.shape} and {vals.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError("track_ids must be integers")
        tracked = ids[ids >= 0]
        if np.unique(tracked).size != tracked.size:
            raise ValueError("duplicate track ids in one update")
        if not np.all(np.isfinite(vals)):
            raise ValueError("scores must be finite")
        self.step += 1
        out = np.empty(ids.shape, dtype=np.result_type(vals.dtype, np.float32))
        for i, (tid, score) in enumerate(zip(ids.tolist(), vals.tolist())):
            if tid < 0:
                out[i] = score
                continue
            prev = self._tracks.get(tid)
            value = score if prev is None else self.alpha * score + (1 - self.alpha) * prev[0]
            self._tracks[tid] = (value, self.step)
            out[i] = value
        self._tracks = {t: v for t, v in self._tracks.items() if self.step - v[1] < self.max_missed}
        return out

    def value(self, track_id: int) -> float:
        """The track's current smoothed score (NaN when unknown or forgotten)."""
        got = self._tracks.get(int(track_id))
        return math.nan if got is None else got[0]


def warp_maps(maps: Tensor, homography: Tensor, stride: int) -> Tensor:
    """Carry a previous frame's stride-`stride` maps (B, C, h, w) onto the current frame's grid, given the
    pixel homographies previous -> current frame (B, 3, 3) (OpenCV pixel coordinates, pixel k at k): each
    current cell centre ((j + 0.5) * stride - 0.5 px) is taken back through H^-1 and the previous maps are
    sampled there bilinearly; cells the previous frame did not see get zeros (a fresh state). A turret that
    slews moves the whole image, so a recurrent state must follow it or it smears targets over the map."""
    b, c, h, w = maps.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=maps.dtype, device=maps.device),
                            torch.arange(w, dtype=maps.dtype, device=maps.device), indexing="ij")
    cur = torch.stack([(xs + 0.5) * stride - 0.5, (ys + 0.5) * stride - 0.5, torch.ones_like(xs)], -1)
    inv = torch.linalg.inv(homography.to(maps.dtype))  # (B, 3, 3)
    prev = torch.einsum("bij,hwj->bhwi", inv, cur)
    prev = prev[..., :2] / prev[..., 2:].clamp_min(1e-9)
    cell = (prev + 0.5) / stride - 0.5  # previous grid's cell coordinates
    grid = torch.stack([(cell[..., 0] + 0.5) / w * 2 - 1, (cell[..., 1] + 0.5) / h * 2 - 1], -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RecurrentMaps(nn.Module):
    """Option 1 on a trained detector: a ConvGRU over its fused maps, state carried between frames with the
    turret's motion (`warp_maps`), added back residually: f' = f + merge(h), h = GRU(f, warp(h_prev)).
    `merge` starts at zero, so before training the detector is unchanged. forward(f, state) -> (f', h)."""

    def __init__(self, channels: int, hidden: int = 16, kernel: int = 3):
        super().__init__()
        self.cell = ConvGRUCell(channels, hidden, kernel)
        self.merge = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.merge.weight)
        nn.init.zeros_(self.merge.bias)

    def forward(self, f: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.cell(f, state)
        return f + self.merge(h), h
