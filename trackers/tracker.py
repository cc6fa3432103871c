"""Multi-object tracker: Kalman prediction, Hungarian association, tentative / confirmed / lost life cycle.

Each frame: warp every track by the camera's homography (if given), predict, associate detections
with score >= birth_score to all tracks, then the remaining detections (min_score <= score < birth_score)
to the still unmatched confirmed tracks that were matched on the previous frame (ByteTrack's second
association), update the matched tracks, start tentative tracks from unmatched high-score detections,
report, and delete tracks that were unmatched for too long.

Life cycle: a track is tentative until it has been matched on `min_hits` consecutive frames after
the detection that started it (SORT's counting); then confirmed. A confirmed track that misses is lost;
a lost track can be matched again (and is confirmed again at once) until it has missed more than
`max_age` frames, when it is deleted. A tentative track is deleted after `tentative_max_age` misses.
Track ids are handed out when a track is first reported, from 1, and restart at `reset()`; a newly
confirmed track near a lost one takes the lost track's id (see `reid_gate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from trackers.association import INFEASIBLE, assign, box_sizes, gated_cost
from trackers.kalman import MOTION_MODELS, MotionModel, make_motion_model


@dataclass
class TrackerConfig:
    """Tracker settings; `TrackerConfig.sort()` gives the settings equivalent to SORT."""

    motion: Literal["cv", "sort"] = "cv"  # "cv": constant velocity on centre and size; "sort": SORT's filter
    max_age: int = 30  # frames a confirmed track may stay unmatched (lost) before it is deleted
    tentative_max_age: int = 0  # the same for tentative tracks (0: deleted at the first miss)
    min_hits: int = 2  # consecutive matches, after the starting detection, that confirm a track
    iou_threshold: float = 0.3  # an IoU pair is feasible when IoU >= this
    small_box: float = 64.0  # px; tracks whose predicted sqrt(w*h) is below this also match by centre distance
    center_gate: float = 2.5  # centre-distance gate radius, in box sizes (sqrt(w*h) of the prediction); 0: off
    gate_growth: float = 0.5  # box sizes added to the gate radius per frame the track has missed
    birth_gate: float = 4.0  # box sizes; gate radius of a track seen once (its velocity is still unknown)
    max_gate: float = 4.0  # box sizes; cap on the grown gate radius
    min_gate_size: float = 8.0  # px; floor on the box size the gate is scaled by (tiny boxes); half of it floors
    #                             the sizes compared by max_size_ratio
    max_size_ratio: float = 2.0  # a centre-distance pair also needs sizes within this ratio; 0: off
    reid_gate: float = 10.0  # box sizes; a newly confirmed track this close to a lost track takes its id; 0: off
    birth_score: float = 0.5  # detections at or above this start tracks and are associated first
    min_score: float = 0.0  # detections below are ignored; those below birth_score only extend tracks that
    # were matched on the previous frame (ByteTrack's second association)
    process_noise: float = 0.1  # "cv": velocity random-walk std per frame, fraction of the box size
    measurement_noise: float = 0.05  # "cv": box measurement std, fraction of the box size
    init_velocity_std: float = 1.0  # "cv": std of a new track's unknown velocity, box sizes per frame
    velocity_decay: float = 0.3  # velocity factor per frame while a track coasts (1: constant velocity)
    coast_frames: int = 1  # lost tracks are reported with their predicted box up to this many frames
    backfill: bool = True  # when a track is confirmed, also report its boxes of the frames it was tentative
    sort_output: bool = False  # SORT's rule: report a track only on frames it is matched, while its
    # hit_streak >= min_hits or in the first min_hits frames (a re-matched lost track rebuilds its streak)

    @classmethod
    def sort(cls) -> "TrackerConfig":
        """SORT (Bewley et al. 2016): max_age 1, min_hits 3, IoU 0.3, its filter and output rule."""
        return cls(motion="sort", max_age=1, tentative_max_age=1, min_hits=3, iou_threshold=0.3, center_gate=0.0,
                   reid_gate=0.0, birth_score=0.0, min_score=0.0, velocity_decay=1.0, coast_frames=0,
                   backfill=False, sort_output=True)

    def validate(self, prefix: str = "") -> None:
        def require(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ValueError(f"{prefix}{key}: {message}")

        require(self.motion in MOTION_MODELS, "motion", f"{self.motion!r} is not one of {', '.join(MOTION_MODELS)}")
        for key in ("max_age", "tentative_max_age", "min_hits", "coast_frames"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(self.coast_frames <= self.max_age, "coast_frames", f"must be <= max_age ({self.max_age})")
        require(0.0 <= self.iou_threshold <= 1.0, "iou_threshold", f"must be in [0, 1], got {self.iou_threshold}")
        for key in ("small_box", "center_gate", "gate_growth", "birth_gate", "max_gate", "min_gate_size", "max_size_ratio",
                    "reid_gate"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(self.max_size_ratio == 0 or self.max_size_ratio >= 1, "max_size_ratio",
                f"must be 0 (off) or >= 1, got {self.max_size_ratio}")
        require(self.min_score <= self.birth_score, "min_score",
                f"must be <= birth_score ({self.birth_score}), got {self.min_score}")
        for key in ("process_noise", "measurement_noise", "init_velocity_std"):
            require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        require(0.0 <= self.velocity_decay <= 1.0, "velocity_decay", f"must be in [0, 1], got {self.velocity_decay}")


@dataclass
class TrackOutput:
    """Tracks reported at one frame: xyxy float32 (M, 4), scores float32 (M,) (score of the last matched
    detection), track_ids int64 (M,), coasting bool (M,) (True: predicted box of a lost track)."""

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    coasting: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # Rows for earlier frames, revealed now that a tentative track was confirmed (cfg.backfill):
    # frames_ago int64 (K,) (1: the previous frame), with boxes, scores and ids as above.
    backfill_frames_ago: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    backfill_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    backfill_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    backfill_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.track_ids)

    def backfill_groups(self):
        """The backfilled rows grouped by earlier frame: (frames_ago, xyxy, scores, track_ids) each."""
        for ago in np.unique(self.backfill_frames_ago):
            sel = self.backfill_frames_ago == ago
            yield int(ago), self.backfill_xyxy[sel], self.backfill_scores[sel], self.backfill_ids[sel]

    def mot_rows(self, frame: int) -> np.ndarray:
        """MOTChallenge rows (K, 10) float64 of these tracks at `frame`, then the backfilled rows of
        earlier frames: frame, id, x, y, w, h, score, -1, -1, -1."""
        frames = np.r_[np.full(len(self.track_ids), frame), frame - self.backfill_frames_ago]
        boxes = np.r_[self.xyxy.reshape(-1, 4), self.backfill_xyxy.reshape(-1, 4)].astype(np.float64)
        ids = np.r_[self.track_ids, self.backfill_ids]
        scores = np.r_[self.scores, self.backfill_scores]
        return np.c_[frames, ids, boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores, -np.ones((len(ids), 3))]


@dataclass(eq=False)
class Track:
    """One target hypothesis: its motion model, life-cycle counters and public id."""

    model: MotionModel
    score: float
    hit_streak: int = 0  # consecutive matches since the starting detection
    time_since_update: int = 0
    confirmed: bool = False
    track_id: int = 0  # 0 until first reported
    pending: list = field(default_factory=list)  # (frame, xyxy, score) matched while tentative

    @property
    def state(self) -> str:
        if not self.confirmed:
            return "tentative"
        return "lost" if self.time_since_update > 0 else "confirmed"

    def predict(self, velocity_decay: float) -> None:
        self.model.predict(velocity_decay if self.time_since_update > 0 else 1.0)
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1

    def update(self, xyxy: np.ndarray, score: float, frame: int) -> None:
        if not self.confirmed:
            self.pending.append((frame, np.array(xyxy, np.float32), score))
        self.model.update(xyxy)
        self.score = score
        self.time_since_update = 0
        self.hit_streak += 1


class Tracker:
    """`update()` once per frame, in order; `reset()` between videos."""

    def __init__(self, cfg: TrackerConfig | None = None):
        self.cfg = cfg or TrackerConfig()
        self.cfg.validate()
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self._frame_size: tuple[int, int] | None = None
        self.frame_count = 0
        self._next_id = 1

    def update(self, xyxy: np.ndarray, scores: np.ndarray, homography: np.ndarray | None = None,
               frame_size: tuple[int, int] | None = None) -> TrackOutput:
        """One frame's detections (xyxy (N, 4) px, scores (N,)) and optionally the 3x3 homography from
        the previous frame to this one and the frame's (width, height); returns the tracks reported at
        this frame. A coasting track whose predicted centre has left the frame is not reported (without
        frame_size, only the left and top edges are known)."""
        xyxy, scores = _check_inputs(xyxy, scores, homography)
        cfg = self.cfg
        self._frame_size = frame_size
        self.frame_count += 1
        for t in self.tracks:
            if homography is not None:
                t.model.warp(homography)
            t.predict(cfg.velocity_decay)
        self.tracks = [t for t in self.tracks if t.model.is_valid()]

        keep = (scores >= cfg.min_score) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        high = np.flatnonzero(keep & (scores >= cfg.birth_score))
        low = np.flatnonzero(keep & (scores < cfg.birth_score))
        unmatched = np.arange(len(self.tracks))
        unmatched_high, unmatched = self._match(xyxy, scores, high, unmatched)
        tracked = np.array([i for i in unmatched if self.tracks[i].confirmed and self.tracks[i].time_since_update == 1],
                           np.int64)
        self._match(xyxy, scores, low, tracked)
        for d in unmatched_high:
            self.tracks.append(Track(make_motion_model(cfg.motion, xyxy[d], cfg.process_noise,
                                                       cfg.measurement_noise, cfg.init_velocity_std),
                                     float(scores[d]), pending=[(self.frame_count, xyxy[d].astype(np.float32),
                                                                 float(scores[d]))]))
        out = self._report()
        self.tracks = [t for t in self.tracks
                       if t.time_since_update <= (cfg.max_age if t.confirmed else cfg.tentative_max_age)]
        return out

    def _match(self, xyxy: np.ndarray, scores: np.ndarray, dets: np.ndarray, tracks: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Associate detections `dets` with tracks `tracks` (index arrays), update the matched tracks;
        returns the unmatched detection and track indices."""
        if len(dets) == 0 or len(tracks) == 0:
            return dets, tracks
        predicted = np.stack([self.tracks[i].model.box() for i in tracks])
        cost = gated_cost(xyxy[dets], predicted, self.cfg.iou_threshold, self._gate_radius(predicted, tracks),
                          self.cfg.max_size_ratio, self.cfg.min_gate_size / 2)
        matches, free_dets, free_tracks = assign(cost)
        for d, t in matches:
            self.tracks[tracks[t]].update(xyxy[dets[d]], float(scores[dets[d]]), self.frame_count)
        return dets[free_dets], tracks[free_tracks]

    def _gate_radius(self, predicted: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """Centre-distance gate radius in pixels per track (0: IoU only), widening with each missed frame."""
        cfg = self.cfg
        size = box_sizes(predicted)
        missed = np.array([self.tracks[i].time_since_update - 1 for i in tracks], np.float64)
        gate = np.minimum(cfg.center_gate + cfg.gate_growth * missed, max(cfg.max_gate, cfg.center_gate))
        newborn = np.array([len(self.tracks[i].pending) == 1 and not self.tracks[i].confirmed for i in tracks])
        gate = np.where(newborn, np.maximum(gate, cfg.birth_gate), gate)
        radius = np.maximum(size, cfg.min_gate_size) * gate
        return np.where((size < cfg.small_box) & (cfg.center_gate > 0), radius, 0.0)

    def _give_id(self, track: Track) -> int:
        """A newly confirmed track takes the id of the nearest lost track within reid_gate (that track is
        dropped: the target jumped, e.g. with the turret, beyond the association gate); else a new id.
        Returns the last frame at which the id was already reported (0: a new id)."""
        lost = [t for t in self.tracks if t.track_id and t.time_since_update > 0]
        if self.cfg.reid_gate > 0 and lost:
            box = track.model.box()[None]
            boxes = np.stack([t.model.box() for t in lost])
            sizes = np.maximum(box_sizes(boxes), self.cfg.min_gate_size)
            cost = gated_cost(box, boxes, 1.0, sizes * self.cfg.reid_gate, self.cfg.max_size_ratio,
                              self.cfg.min_gate_size / 2)[0]
            if cost.min() < INFEASIBLE:
                old = lost[int(cost.argmin())]
                track.track_id = old.track_id
                self.tracks.remove(old)
                return self.frame_count - old.time_since_update + self.cfg.coast_frames
        track.track_id, self._next_id = self._next_id, self._next_id + 1
        return 0

    def _shown(self, t: Track) -> bool:
        """Whether track t is reported at this frame (confirms it on the way)."""
        cfg = self.cfg
        if cfg.sort_output:
            show = t.time_since_update == 0 and (t.hit_streak >= cfg.min_hits or self.frame_count <= cfg.min_hits)
        else:
            t.confirmed |= t.hit_streak >= cfg.min_hits
            show = t.confirmed and t.time_since_update <= cfg.coast_frames
            if show and t.time_since_update > 0:
                x1, y1, x2, y2 = t.model.box()
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                w, h = self._frame_size or (np.inf, np.inf)
                show = 0 <= cx < w and 0 <= cy < h
        t.confirmed |= show
        return show

    def _report(self) -> TrackOutput:
        late = []
        for t in [t for t in self.tracks if t.track_id == 0 and self._shown(t)]:
            shown_until = self._give_id(t)
            if self.cfg.backfill:
                late += [(self.frame_count - f, box, score, t.track_id) for f, box, score in t.pending
                         if shown_until < f < self.frame_count]
        for t in self.tracks:
            if t.confirmed:
                t.pending = []
        rows = [(t.model.box(), t.score, t.track_id, t.time_since_update > 0) for t in self.tracks if self._shown(t)]
        out = TrackOutput()
        if rows:
            boxes, s, ids, coast = zip(*rows)
            out = TrackOutput(np.asarray(boxes, np.float32), np.asarray(s, np.float32),
                              np.asarray(ids, np.int64), np.asarray(coast, bool))
        if late:
            ago, boxes, s, ids = zip(*late)
            out.backfill_frames_ago = np.asarray(ago, np.int64)
            out.backfill_xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
            out.backfill_scores = np.asarray(s, np.float32)
            out.backfill_ids = np.asarray(ids, np.int64)
        return out


def _check_inputs(xyxy: np.ndarray, scores: np.ndarray, homography: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    xyxy = np.asarray(xyxy, np.float64)
    if xyxy.size == 0:
        xyxy = xyxy.reshape(0, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
    if len(scores) != len(xyxy):
        raise ValueError(f"{len(scores)} scores for {len(xyxy)} boxes")
    if not (np.all(np.isfinite(xyxy)) and np.all(np.isfinite(scores))):
        raise ValueError("boxes and scores must be finite")
    if homography is not None:
        h = np.asarray(homography)
        if h.shape != (3, 3) or not np.all(np.isfinite(h)):
            raise ValueError(f"homography must be a finite 3x3 matrix, got shape {h.shape}")
    return xyxy, scores
