"""How precisely a checkpoint places its boxes, per class, on the validation split.

    python bench/localisation.py --checkpoint RUN_DIR [--radius 1.5] [--score 0.3] [--out docs/results]

For every ground-truth box, the nearest detection of its class with a score above ``--score`` within
``--radius`` metres (centre distance) is its match. Per class it reports the share of boxes matched, and
over the matched ones the median (and 75th percentile) centre error, the median BEV IoU and the share
with IoU >= 0.5, the median length and width ratios (detected / true) and the median yaw error. It tells
apart "not found" from "found but placed too imprecisely for IoU 0.5", which AP alone does not.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import markdown_table, write_result  # noqa: E402
from models.batch import Batch  # noqa: E402
from models.detections import SceneDetections  # noqa: E402
from trainer.eval.iou import bev_iou  # noqa: E402


def match_errors(detections: list[SceneDetections], batch: Batch, *, radius: float, score: float) -> list[tuple]:
    """One row per ground-truth box: (class, matched, centre error m, IoU, length ratio, width ratio, yaw error
    rad); the last five are NaN when no detection of its class lies within ``radius``."""
    rows = []
    for scene, det in enumerate(detections):
        mask = batch.gt_mask[scene]
        gt_boxes, gt_classes = batch.gt_boxes[scene][mask].float(), batch.gt_classes[scene][mask]
        keep = det.scores > score
        boxes, labels = det.boxes[keep].float(), det.labels[keep]
        for box, cls in zip(gt_boxes, gt_classes.tolist()):
            same = (labels == cls).nonzero().squeeze(1)
            dist = (boxes[same, :2] - box[:2]).norm(dim=1) if len(same) else torch.zeros(0)
            if len(same) == 0 or float(dist.min()) > radius:
                rows.append((cls, False) + (math.nan,) * 5)
                continue
            best = boxes[same[dist.argmin()]]
            iou = float(bev_iou(best[None], box[None])[0, 0])
            yaw = abs((float(best[6] - box[6]) + math.pi) % (2 * math.pi) - math.pi)
            rows.append((cls, True, float(dist.min()), iou, float(best[3] / box[3]), float(best[4] / box[4]), yaw))
    return rows


def summarise(rows: list[tuple], class_names: list[str]) -> list[dict]:
    """Per-class summary of ``match_errors`` rows (see the module docstring)."""
    out = []
    for cls, name in enumerate(class_names):
        mine = [r for r in rows if r[0] == cls]
        found = np.array([r[2:] for r in mine if r[1]], dtype=float).reshape(-1, 5)
        med = (lambda col: float(np.median(found[:, col])) if len(found) else math.nan)
        out.append({"class": name, "gt": len(mine), "found": len(found) / max(len(mine), 1),
                    "centre_err_median_m": med(0),
                    "centre_err_p75_m": float(np.percentile(found[:, 0], 75)) if len(found) else math.nan,
                    "iou_median": med(1),
                    "iou_at_least_0.5": float((found[:, 1] >= 0.5).mean()) if len(found) else math.nan,
                    "length_ratio_median": med(2), "width_ratio_median": med(3),
                    "yaw_err_median_deg": math.degrees(med(4)) if len(found) else math.nan})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="run directory, stage folder or exported weights")
    parser.add_argument("--stage", default=None)
    parser.add_argument("--radius", type=float, default=1.5, help="match radius (m)")
    parser.add_argument("--score", type=float, default=0.3, help="detections above this score take part")
    parser.add_argument("--out", type=Path, default=None, help="also write localisation.{json,md} here")
    args = parser.parse_args()
    from trainer.checkpointing.checkpoint_io import load_for_inference
    from trainer.data.loader import build_loader
    from trainer.eval.model_eval import predict_scenes

    setup = load_for_inference(args.checkpoint, stage=args.stage)
    model = setup.model.eval()
    rows = []
    for batch in build_loader(setup.cfg.data, setup.cfg.model.grid, split="val", rank=0, world_size=1, seed=0):
        rows += match_errors(predict_scenes(model, batch, stage=setup.stage), batch, radius=args.radius,
                             score=args.score)
    summary = summarise(rows, setup.cfg.eval.class_names)
    header = ["class", "gt", "found", "centre err median (m)", "centre err p75 (m)", "IoU median", "IoU >= 0.5",
              "length ratio", "width ratio", "yaw err median (deg)"]
    table = markdown_table(header, [[s["class"], s["gt"], s["found"], s["centre_err_median_m"], s["centre_err_p75_m"],
                                     s["iou_median"], s["iou_at_least_0.5"], s["length_ratio_median"],
                                     s["width_ratio_median"], s["yaw_err_median_deg"]] for s in summary])
    print(table)
    if args.out is not None:
        write_result(args.out, "localisation", command="python bench/localisation.py " + " ".join(sys.argv[1:]),
                     checkpoint=str(setup.resolved.path), table=table, radius=args.radius, score=args.score,
                     classes=summary)


if __name__ == "__main__":
    main()
