"""3D shapes of the flying objects at an instant: lists of `Part`s in ENU metres, drawn by render.py."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.synth.scenario import SceneObject

AMBIENT_C = 15.0


@dataclass
class Part:
    kind: str              # poly (filled, in order) | hull (filled convex hull) | line | disc
    points: np.ndarray     # (k, 3) ENU; a line has 2 points, a disc 1 (its centre)
    colour: tuple          # RGB 0..255
    temp: float            # Celsius
    size: float = 0.0      # line width or disc radius in metres
    opacity: float = 1.0


def _body_axes(vel: np.ndarray, yaw_offset: float, lean_per_ms: float, max_lean: float, pitch: float = 0.0
               ) -> np.ndarray:
    """Rows: forward, left, up of a body heading along `vel` (+ yaw offset), leaning into its motion."""
    heading = np.arctan2(vel[0], vel[1]) + yaw_offset
    fwd = np.array([np.sin(heading), np.cos(heading), 0.0])
    left = np.array([-np.cos(heading), np.sin(heading), 0.0])
    axes = np.stack([fwd, left, [0.0, 0.0, 1.0]])
    vh = np.hypot(vel[0], vel[1])
    lean = np.radians(min(lean_per_ms * vh, max_lean))
    if vh > 1e-6 and lean > 0:
        axis = np.cross([0.0, 0.0, 1.0], [vel[0] / vh, vel[1] / vh, 0.0])
        rot, _ = cv2.Rodrigues(axis * lean)
        axes = axes @ rot.T
    if pitch:
        rot, _ = cv2.Rodrigues(axes[1] * -pitch)
        axes = axes @ rot.T
    return axes


def _to_enu(centre: np.ndarray, axes: np.ndarray, body_pts) -> np.ndarray:
    return centre + np.asarray(body_pts, float).reshape(-1, 3) @ axes


def _circle(c, r, n=12) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a), np.full(n, c[2])])


def _box(lx, ly, z0, z1) -> np.ndarray:
    return np.array([[x, y, z] for x in (-lx, lx) for y in (-ly, ly) for z in (z0, z1)])


def drone_parts(obj: SceneObject, t: float) -> list[Part]:
    """A quadcopter, or the shape in obj.look["shape"] (hexa, fixed_wing) of the randomized profile."""
    s, lk = obj.span, obj.look
    if lk.get("shape", "quad") != "quad":
        return DRONE_SHAPES[lk["shape"]](obj, t)
    pos, vel = obj.path.at(t)[0], obj.path.velocity(t)[0]
    axes = _body_axes(vel, lk["yaw_offset"], 1.6, 25.0)
    body, accent, tb, tm = lk["body"], lk["accent"], lk["body_temp"], lk["motor_temp"]
    arm, rotor = 0.3 * s, 0.2 * s
    ends = [np.array([arm * np.cos(a), arm * np.sin(a), 0.0]) for a in np.radians([45, 135, 225, 315])]
    p = lambda pts: _to_enu(pos, axes, pts)  # noqa: E731
    parts = [Part("poly", p(_circle(e + [0, 0, 0.04 * s], rotor)), (95, 95, 98), AMBIENT_C + 3, 0.0,
                  lk["rotor_opacity"]) for e in ends]
    for side in (-1, 1):
        parts.append(Part("line", p([[0.02 * s, side * 0.09 * s, -0.05 * s], [0.05 * s, side * 0.12 * s, -0.2 * s]]),
                          (50, 50, 52), AMBIENT_C, 0.015 * s))
        parts.append(Part("line", p([[-0.1 * s, side * 0.12 * s, -0.2 * s], [0.14 * s, side * 0.12 * s, -0.2 * s]]),
                          (50, 50, 52), AMBIENT_C, 0.015 * s))
    parts += [Part("line", p([[0, 0, 0], e]), tuple(0.8 * np.array(body)), (tb + AMBIENT_C) / 2, 0.045 * s)
              for e in ends]
    parts.append(Part("hull", p(_box(0.16 * s, 0.1 * s, -0.06 * s, 0.05 * s)), body, tb))
    parts.append(Part("hull", p(_box(0.08 * s, 0.06 * s, 0.05 * s, 0.075 * s)), accent, tb + 5))
    parts.append(Part("disc", p([0.15 * s, 0, -0.09 * s]), (30, 30, 32), tb - 5, 0.035 * s))
    parts += [Part("disc", p(e + [0, 0, 0.02 * s]), (35, 35, 38), tm, 0.045 * s) for e in ends]
    return parts


def bird_parts(obj: SceneObject, t: float) -> list[Part]:
    s, lk = obj.span, obj.look
    pos, vel = obj.path.at(t)[0], obj.path.velocity(t)[0]
    pitch = np.arctan2(vel[2], np.hypot(vel[0], vel[1]) + 1e-6)
    axes = _body_axes(vel, 0.0, 0.0, 0.0, pitch)
    flapping = np.clip(0.5 + 1.2 * np.sin(2 * np.pi * lk["glide_hz"] * t + lk["phase"]), 0, 1)
    beta = np.radians(5 + 38 * flapping * np.sin(2 * np.pi * lk["flap_hz"] * t + lk["phase"]))
    p = lambda pts: _to_enu(pos, axes, pts)  # noqa: E731
    colour, tb = lk["colour"], lk["body_temp"]
    parts = []
    for side in (-1, 1):
        def wing_point(x, y, bend=1.0):
            ang = beta * (bend if abs(y) > 0.26 * s else 1.0)
            inner = min(abs(y), 0.26 * s)
            outer = abs(y) - inner
            z = inner * np.sin(beta) + outer * np.sin(ang)
            return [x, side * (inner * np.cos(beta) + outer * np.cos(ang)), z]
        wing = [wing_point(0.06 * s, 0.03 * s), wing_point(0.08 * s, 0.26 * s), wing_point(-0.01 * s, 0.5 * s, 1.4),
                wing_point(-0.08 * s, 0.4 * s, 1.4), wing_point(-0.12 * s, 0.24 * s), wing_point(-0.09 * s, 0.03 * s)]
        parts.append(Part("poly", p(wing), tuple(0.85 * np.array(colour)), tb - 8))
    ell = [[x, y, z] for x, y, z in [(0.22 * s, 0, 0), (-0.2 * s, 0, 0), (0, 0.05 * s, 0), (0, -0.05 * s, 0),
                                      (0, 0, 0.05 * s), (0, 0, -0.05 * s), (0.12 * s, 0.035 * s, 0.02 * s),
                                      (0.12 * s, -0.035 * s, 0.02 * s)]]
    parts.append(Part("hull", p(ell), colour, tb))
    parts.append(Part("hull", p([[-0.18 * s, 0.02 * s, 0], [-0.18 * s, -0.02 * s, 0], [-0.36 * s, 0.08 * s, 0],
                                 [-0.36 * s, -0.08 * s, 0]]), colour, tb - 6))
    parts.append(Part("disc", p([0.25 * s, 0, 0.02 * s]), colour, tb + 2, 0.045 * s))
    return parts


def airplane_parts(obj: SceneObject, t: float) -> list[Part]:
    s, lk = obj.span, obj.look
    pos, vel = obj.path.at(t)[0], obj.path.velocity(t)[0]
    axes = _body_axes(vel, 0.0, 0.0, 0.0)
    p = lambda pts: _to_enu(pos, axes, pts)  # noqa: E731
    colour, skin = lk["colour"], lk["skin_temp"]
    parts = [Part("poly", p([[0.05 * s, 0, 0], [-0.12 * s, side * 0.5 * s, 0], [-0.2 * s, side * 0.5 * s, 0],
                             [-0.15 * s, 0, 0]]), colour, skin) for side in (-1, 1)]
    parts.append(Part("poly", p([[-0.4 * s, 0, 0], [-0.5 * s, 0, 0.18 * s], [-0.55 * s, 0, 0.18 * s],
                                 [-0.5 * s, 0, 0]]), colour, skin))
    parts.append(Part("line", p([[0.5 * s, 0, 0], [-0.5 * s, 0, 0]]), colour, skin, 0.1 * s))
    parts += [Part("disc", p([0.0, side * 0.18 * s, -0.03 * s]), (150, 150, 155), lk["engine_temp"], 0.03 * s)
              for side in (-1, 1)]
    return parts


def hexacopter_parts(obj: SceneObject, t: float) -> list[Part]:
    """Six arms, smaller rotors, a larger body; the same conventions as the quadcopter."""
    s, lk = obj.span, obj.look
    pos, vel = obj.path.at(t)[0], obj.path.velocity(t)[0]
    axes = _body_axes(vel, lk["yaw_offset"], 1.4, 22.0)
    body, accent, tb, tm = lk["body"], lk["accent"], lk["body_temp"], lk["motor_temp"]
    arm, rotor = 0.36 * s, 0.14 * s
    ends = [np.array([arm * np.cos(a), arm * np.sin(a), 0.0]) for a in np.radians(np.arange(30, 360, 60))]
    p = lambda pts: _to_enu(pos, axes, pts)  # noqa: E731
    parts = [Part("poly", p(_circle(e + [0, 0, 0.04 * s], rotor)), (95, 95, 98), AMBIENT_C + 3, 0.0,
                  lk["rotor_opacity"]) for e in ends]
    for side in (-1, 1):
        parts.append(Part("line", p([[0.0, side * 0.1 * s, -0.05 * s], [0.0, side * 0.16 * s, -0.22 * s]]),
                          (50, 50, 52), AMBIENT_C, 0.015 * s))
        parts.append(Part("line", p([[-0.12 * s, side * 0.16 * s, -0.22 * s], [0.12 * s, side * 0.16 * s, -0.22 * s]]),
                          (50, 50, 52), AMBIENT_C, 0.015 * s))
    parts += [Part("line", p([[0, 0, 0], e]), tuple(0.8 * np.array(body)), (tb + AMBIENT_C) / 2, 0.035 * s)
              for e in ends]
    parts.append(Part("hull", p(_circle([0, 0, -0.05 * s], 0.12 * s, 6).tolist()
                                + _circle([0, 0, 0.05 * s], 0.12 * s, 6).tolist()), body, tb))
    parts.append(Part("hull", p(_box(0.06 * s, 0.05 * s, 0.05 * s, 0.08 * s)), accent, tb + 5))
    parts.append(Part("disc", p([0.1 * s, 0, -0.1 * s]), (30, 30, 32), tb - 5, 0.03 * s))
    parts += [Part("disc", p(e + [0, 0, 0.02 * s]), (35, 35, 38), tm, 0.035 * s) for e in ends]
    return parts


def fixed_wing_parts(obj: SceneObject, t: float) -> list[Part]:
    """A small fixed-wing drone: tapered wing of span s, fuselage, tailplane and fin, pusher propeller."""
    s, lk = obj.span, obj.look
    pos, vel = obj.path.at(t)[0], obj.path.velocity(t)[0]
    pitch = np.arctan2(vel[2], np.hypot(vel[0], vel[1]) + 1e-6)
    axes = _body_axes(vel, 0.0, 0.0, 0.0, pitch)
    body, accent, tb, tm = lk["body"], lk["accent"], lk["body_temp"], lk["motor_temp"]
    p = lambda pts: _to_enu(pos, axes, pts)  # noqa: E731
    parts = [Part("poly", p([[0.08 * s, 0, 0], [0.03 * s, side * 0.5 * s, 0.01 * s], [-0.04 * s, side * 0.5 * s, 0.01 * s],
                             [-0.08 * s, 0, 0]]), body, tb - 3) for side in (-1, 1)]
    parts.append(Part("line", p([[0.3 * s, 0, 0], [-0.38 * s, 0, 0.01 * s]]), body, tb, 0.07 * s))
    parts.append(Part("poly", p([[-0.3 * s, 0, 0.01 * s], [-0.36 * s, 0.16 * s, 0.01 * s], [-0.4 * s, 0.16 * s, 0.01 * s],
                                 [-0.4 * s, -0.16 * s, 0.01 * s], [-0.36 * s, -0.16 * s, 0.01 * s]]), accent, tb - 3))
    parts.append(Part("poly", p([[-0.3 * s, 0, 0.02 * s], [-0.38 * s, 0, 0.13 * s], [-0.41 * s, 0, 0.13 * s],
                                 [-0.4 * s, 0, 0.02 * s]]), accent, tb - 3))
    parts.append(Part("disc", p([0.2 * s, 0, -0.03 * s]), (30, 30, 32), tb - 3, 0.025 * s))
    parts.append(Part("disc", p([-0.39 * s, 0, 0.0]), (40, 40, 42), tm, 0.04 * s))  # the motor
    parts.append(Part("poly", p(np.array([[-0.41 * s, 0.11 * s * np.cos(a), 0.11 * s * np.sin(a)]
                                          for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)])),
                      (95, 95, 98), AMBIENT_C + 3, 0.0, lk["rotor_opacity"]))
    return parts


def helicopter_parts(obj: SceneObject, t: float) -> list[Part]:
    """A light helicopter: span = main rotor diameter D; cabin, tail boom, fin, tail rotor, skids, a
    translucent main rotor disc and a hot exhaust."""
    d, lk = obj.span, obj.look
    pos, vel = obj.path.at(t)[0], obj.path.velocity(t)[0]
    axes = _body_axes(vel, lk["yaw_offset"], 0.25, 12.0)
    colour, skin, hot = lk["colour"], lk["skin_temp"], lk["engine_temp"]
    dark = tuple(0.35 * np.array(colour) + 20)
    p = lambda pts: _to_enu(pos, axes, pts)  # noqa: E731
    cabin = [[x * d, y * d, z * d] for x, y, z in [(0.22, 0, -0.02), (0.18, 0.05, 0.04), (0.18, -0.05, 0.04),
                                                   (0.16, 0.06, -0.07), (0.16, -0.06, -0.07), (-0.1, 0.06, 0.06),
                                                   (-0.1, -0.06, 0.06), (-0.12, 0.05, -0.07), (-0.12, -0.05, -0.07),
                                                   (0.0, 0, 0.09)]]
    parts = [Part("line", p([[-0.08 * d, 0, 0.01 * d], [-0.56 * d, 0, 0.04 * d]]), colour, skin, 0.035 * d),
             Part("poly", p([[-0.5 * d, 0, 0.03 * d], [-0.58 * d, 0, 0.13 * d], [-0.61 * d, 0, 0.13 * d],
                             [-0.57 * d, 0, 0.0]]), colour, skin),
             Part("hull", p(cabin), colour, skin),
             Part("poly", p([[0.2 * d, 0.045 * d, 0.03 * d], [0.2 * d, -0.045 * d, 0.03 * d], [0.13 * d, -0.055 * d, 0.06 * d],
                             [0.13 * d, 0.055 * d, 0.06 * d]]), (40, 50, 60), skin - 3)]  # windscreen
    for side in (-1, 1):
        parts.append(Part("line", p([[-0.13 * d, side * 0.08 * d, -0.13 * d], [0.2 * d, side * 0.08 * d, -0.13 * d]]),
                          dark, skin, 0.012 * d))
        for x in (-0.06, 0.1):
            parts.append(Part("line", p([[x * d, side * 0.05 * d, -0.07 * d], [x * d, side * 0.08 * d, -0.13 * d]]),
                              dark, skin, 0.01 * d))
    parts.append(Part("line", p([[0.0, 0, 0.08 * d], [0.0, 0, 0.12 * d]]), dark, skin + 10, 0.02 * d))  # rotor mast
    parts.append(Part("disc", p([-0.07 * d, 0, 0.08 * d]), (50, 50, 52), hot, 0.025 * d))             # exhaust
    parts.append(Part("poly", p(_circle([0, 0, 0.12 * d], 0.5 * d, 24)), (70, 70, 72), AMBIENT_C, 0.0,
                      lk["rotor_opacity"]))
    tail_rotor = [[-0.58 * d + 0.08 * d * np.cos(a), 0.02 * d, 0.05 * d + 0.08 * d * np.sin(a)]
                  for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    parts.append(Part("poly", p(tail_rotor), (70, 70, 72), AMBIENT_C, 0.0, min(1.0, 1.5 * lk["rotor_opacity"])))
    return parts


DRONE_SHAPES = {"hexa": hexacopter_parts, "fixed_wing": fixed_wing_parts}
MODELS = {"drone": drone_parts, "bird": bird_parts, "airplane": airplane_parts, "helicopter": helicopter_parts}
