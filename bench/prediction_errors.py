"""Where a checkpoint's trajectory misses come from, per class and speed, on the validation split.

    python bench/prediction_errors.py --checkpoint RUN_DIR [--score 0.3] [--radius 2.0] [--out docs/results]

Every ground-truth object whose last future step is valid is matched to the nearest detection (any class)
with a score of at least ``--score`` within ``--radius`` metres (greedy by distance, one to one), as EPA
matches. For each matched object it takes the mode with the smallest final displacement error (FDE, the
miss rule's quantity) and splits that error at the last step into its along-track part (the object went
farther or less far than predicted: a speed error) and its cross-track part (it went elsewhere: a heading or
turn error), in the frame of the true displacement (of the true heading for objects that barely move). It
also scores a constant-velocity extrapolation of the true past (the velocity between the last two history
frames, held for the horizon) and a constant-turn-rate one (speed and turn rate from the last three): what a
perfect estimate of the motion state alone would reach. With ``--track-oracle`` it also trains the track
decoder (``models.track_decode.TrackDecoder``) on the true past tracks of the training split and scores it on
the true tracks of the matched validation objects: what the track stage would reach with perfect tracks. Rows: per class, and per
class and speed band (true speed at t from the past positions).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import markdown_table, write_result  # noqa: E402
from models.batch import Batch  # noqa: E402
from models.detections import SceneDetections  # noqa: E402
from models.track_decode import TrackDecoder, to_box_frame  # noqa: E402
from trainer.losses.prediction import winner_takes_all_losses  # noqa: E402

SPEED_BANDS = ((0.0, 0.5, "still"), (0.5, 4.0, "slow"), (4.0, math.inf, "fast"))
"""(low, high m/s, name) of the speed bands."""
ORACLE_POINTS = 20
"""Points per past frame the oracle decoder is told it saw (a true track is as good as a well-seen one)."""
STILL_DISPLACEMENT_M = 1.0
"""Below this true displacement the track frame is the object's heading (the displacement has no direction)."""


def track_frame_errors(pred_last: np.ndarray, gt_last: np.ndarray, gt_now: np.ndarray, yaw: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(along, cross) [P] metres: the final error ``pred_last - gt_last`` [P, 2] in the frame of the true
    displacement ``gt_last - gt_now`` (the heading ``yaw`` [P] where it is below ``STILL_DISPLACEMENT_M``)."""
    disp = gt_last - gt_now
    norm = np.linalg.norm(disp, axis=1)
    heading = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    direction = np.where((norm >= STILL_DISPLACEMENT_M)[:, None], disp / np.maximum(norm, 1e-9)[:, None], heading)
    err = pred_last - gt_last
    along = (err * direction).sum(axis=1)
    cross = err[:, 1] * direction[:, 0] - err[:, 0] * direction[:, 1]
    return along, cross


def ctrv_extrapolation(past: np.ndarray, steps: int) -> np.ndarray:
    """Constant turn rate and speed from the last three past positions ``past`` [3, 2] (oldest first), rolled
    ``steps`` steps forward -> the final position [2]."""
    v0, v1 = past[1] - past[0], past[2] - past[1]
    turn = (math.atan2(v1[1], v1[0]) - math.atan2(v0[1], v0[0]) + math.pi) % (2 * math.pi) - math.pi
    heading, speed, pos = math.atan2(v1[1], v1[0]), float(np.linalg.norm(v1)), past[2].astype(float)
    for _ in range(steps):
        heading += turn
        pos = pos + speed * np.array([math.cos(heading), math.sin(heading)])
    return pos


def greedy_nearest(gt_xy: np.ndarray, det_xy: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """(gt index, detection index) pairs, nearest first, one to one, at most ``radius`` apart."""
    if len(gt_xy) == 0 or len(det_xy) == 0:
        return []
    dist = np.linalg.norm(gt_xy[:, None] - det_xy[None], axis=-1)
    pairs, used_g, used_d = [], set(), set()
    for flat in np.argsort(dist, axis=None, kind="stable"):
        g, d = divmod(int(flat), dist.shape[1])
        if dist[g, d] > radius:
            break
        if g not in used_g and d not in used_d:
            pairs.append((g, d))
            used_g.add(g)
            used_d.add(d)
    return pairs


def true_tracks(batch: Batch, scene: int) -> tuple[torch.Tensor, ...]:
    """(track_uv [M, S, 2], future_uv [M, T_f, 2], boxes [M, 7], labels [M], usable [M] bool) of a scene's objects:
    their true past positions before now and future positions in each box's frame; usable: a full past and a
    valid last future step."""
    boxes = batch.gt_boxes[scene].float()
    past = to_box_frame(batch.gt_past[scene][:, :-1].float(), boxes)
    future = to_box_frame(batch.gt_future[scene].float(), boxes)
    usable = batch.gt_mask[scene] & batch.gt_past_valid[scene].all(-1) & batch.gt_future_valid[scene][:, -1]
    return past, future, boxes, batch.gt_classes[scene], usable


def fit_track_oracle(batches: list[Batch], *, num_classes: int, num_modes: int, iters: int = 3000,
                     seed: int = 0) -> TrackDecoder:
    """A track decoder trained on the true tracks of ``batches`` (winner-takes-all, as the track stage)."""
    parts = [true_tracks(b, s) for b in batches for s in range(b.num_scenes)]
    past, future, boxes, labels = (torch.cat([p[i][p[4]] for p in parts]) for i in range(4))
    torch.manual_seed(seed)
    decoder = TrackDecoder(num_classes, 128, past.shape[1], num_modes, future.shape[1])
    optimiser = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    counts = torch.full(past.shape[:2], ORACLE_POINTS)
    for _ in range(iters):
        idx = torch.randint(0, len(past), (256,))
        modes, logits = decoder(past[idx], counts[idx], boxes[idx], labels[idx])
        valid = torch.ones(len(idx), 1, future.shape[1], dtype=torch.bool)
        regression, mode = winner_takes_all_losses(modes[:, None], logits[:, None], future[idx][:, None], valid,
                                                   torch.ones(len(idx), 1, dtype=torch.bool))
        optimiser.zero_grad()
        (regression + 0.5 * mode).backward()
        optimiser.step()
    return decoder.eval()


def object_rows(detections: list[SceneDetections], batch: Batch, *, score: float, radius: float, step_s: float,
                track_oracle: TrackDecoder | None = None) -> list[dict]:
    """One dict per ground-truth object with a valid last future step: class, true speed (m/s), matched, and
    for matched ones FDE / along / cross (m) of the best mode, the constant-velocity and constant-turn oracles'
    FDE and (with ``track_oracle``) that decoder's on the object's true track."""
    rows = []
    horizon = batch.gt_future.shape[2]
    for scene, det in enumerate(detections):
        keep = (batch.gt_mask[scene] & batch.gt_future_valid[scene, :, -1]).numpy()
        boxes = batch.gt_boxes[scene].numpy()[keep]
        future = batch.gt_future[scene].numpy()[keep]
        past, past_valid = batch.gt_past[scene].numpy()[keep], batch.gt_past_valid[scene].numpy()[keep]
        classes = batch.gt_classes[scene].numpy()[keep]
        velocity = np.where(past_valid[:, -2:].all(axis=1)[:, None], (past[:, -1] - past[:, -2]) / step_s, np.nan)
        confident = (det.scores >= score).numpy()
        det_xy, traj = det.boxes[:, :2].numpy()[confident], det.trajectories.numpy()[confident]
        matched = dict(greedy_nearest(boxes[:, :2], det_xy, radius))
        oracle_fde = np.full(len(boxes), np.nan)
        if track_oracle is not None:
            track, future_uv, all_boxes, labels, usable = true_tracks(batch, scene)
            with torch.no_grad():
                modes, _ = track_oracle(track, torch.full(track.shape[:2], ORACLE_POINTS), all_boxes, labels)
            errors = (modes[:, :, -1] - future_uv[:, None, -1]).norm(dim=-1).min(dim=1).values
            oracle_fde = np.where(usable.numpy(), errors.numpy(), np.nan)[keep]
        for i in range(len(boxes)):
            row = {"class": int(classes[i]), "speed": float(np.linalg.norm(velocity[i])), "matched": i in matched}
            if i in matched:
                last = traj[matched[i]][:, -1]  # [K, 2]
                fde = np.linalg.norm(last - future[i, -1], axis=1)
                best = int(fde.argmin())
                along, cross = track_frame_errors(last[best][None], future[i, -1][None], boxes[i, :2][None],
                                                  boxes[i, 6:7])
                oracle = boxes[i, :2] + velocity[i] * step_s * horizon
                turning = (ctrv_extrapolation(past[i, -3:], horizon) if past_valid[i, -3:].all()
                           else np.full(2, np.nan))
                row.update(fde=float(fde[best]), along=float(along[0]), cross=float(cross[0]),
                           oracle_fde=float(np.linalg.norm(oracle - future[i, -1])),
                           ctrv_fde=float(np.linalg.norm(turning - future[i, -1])),
                           track_oracle_fde=float(oracle_fde[i]))
            rows.append(row)
    return rows


def summarise(rows: list[dict], name: str, miss: float) -> dict:
    """Counts, miss rates and median errors of ``rows``."""
    found = [r for r in rows if r["matched"]]
    col = (lambda key: np.array([r[key] for r in found], dtype=float))
    fde, along, cross, oracle, ctrv = col("fde"), col("along"), col("cross"), col("oracle_fde"), col("ctrv_fde")
    learned = col("track_oracle_fde")
    med = (lambda a: float(np.nanmedian(a)) if len(a) and not np.isnan(a).all() else math.nan)
    share = (lambda mask: float(mask.mean()) if len(mask) else math.nan)
    misses = fde > miss
    return {"group": name, "gt": len(rows), "matched": share(np.array([r["matched"] for r in rows])),
            "MR": share(misses), "fde_median": med(fde), "along_abs_median": med(np.abs(along)),
            "cross_abs_median": med(np.abs(cross)),
            "misses_mostly_along": share(np.abs(along[misses]) >= np.abs(cross[misses])),
            "oracle_cv_MR": share(oracle[~np.isnan(oracle)] > miss),
            "oracle_ctrv_MR": share(ctrv[~np.isnan(ctrv)] > miss),
            "oracle_track_MR": share(learned[~np.isnan(learned)] > miss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="run directory, stage folder or exported weights")
    parser.add_argument("--stage", default=None)
    parser.add_argument("--score", type=float, default=None, help="detection score threshold (default: eval's)")
    parser.add_argument("--radius", type=float, default=None, help="match radius, m (default: eval's)")
    parser.add_argument("--step-s", type=float, default=None,
                        help="seconds between trajectory steps (default: the converter's future_stride / raw_rate_hz, "
                             "as the built-in dataset is written)")
    parser.add_argument("--track-oracle", action="store_true",
                        help="also train the track decoder on the training split's true tracks and score it")
    parser.add_argument("--out", type=Path, default=None, help="also write prediction_errors.{json,md} here")
    args = parser.parse_args()
    from trainer.checkpointing.checkpoint_io import load_for_inference
    from trainer.data.config import ConvertConfig
    from trainer.data.loader import build_loader
    from trainer.eval.model_eval import predict_scenes

    setup = load_for_inference(args.checkpoint, stage=args.stage)
    ev, data = setup.cfg.eval, setup.cfg.data
    score = ev.score_cut if args.score is None else args.score
    radius = ev.pred_match_distance if args.radius is None else args.radius
    step_s = args.step_s or ConvertConfig().future_stride / ConvertConfig().raw_rate_hz
    model = setup.model.eval()
    oracle = None
    if args.track_oracle:
        train = dataclasses.replace(data, val_shards=data.train_shards, val_samples=None)
        oracle = fit_track_oracle(list(build_loader(train, setup.cfg.model.grid, split="val", rank=0, world_size=1,
                                                    seed=0)), num_classes=len(ev.class_names),
                                  num_modes=setup.cfg.model.num_modes)
    rows = []
    for batch in build_loader(data, setup.cfg.model.grid, split="val", rank=0, world_size=1, seed=0):
        rows += object_rows(predict_scenes(model, batch, stage=setup.stage), batch, score=score, radius=radius,
                            step_s=step_s, track_oracle=oracle)
    groups = []
    for cls, name in enumerate(ev.class_names):
        mine = [r for r in rows if r["class"] == cls]
        groups.append(summarise(mine, name, ev.miss_threshold))
        for low, high, band in SPEED_BANDS:
            groups.append(summarise([r for r in mine if low <= r["speed"] < high], f"{name} {band}", ev.miss_threshold))
    groups.append(summarise(rows, "all", ev.miss_threshold))
    header = ["group", "gt", "matched", "MR", "FDE median (m)", "along-track |err| median (m)",
              "cross-track |err| median (m)", "misses mostly along-track", "constant-velocity oracle MR",
              "constant-turn oracle MR", "track decoder on the true track MR"]
    keys = ["group", "gt", "matched", "MR", "fde_median", "along_abs_median", "cross_abs_median",
            "misses_mostly_along", "oracle_cv_MR", "oracle_ctrv_MR", "oracle_track_MR"]
    table = markdown_table(header, [[g[k] for k in keys] for g in groups])
    print(table)
    if args.out is not None:
        write_result(args.out, "prediction_errors", command="python bench/prediction_errors.py " + " ".join(sys.argv[1:]),
                     checkpoint=str(setup.resolved.path), table=table, score=score, radius=radius, groups=groups)


if __name__ == "__main__":
    main()
