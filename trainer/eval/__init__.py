"""Evaluation: rotated BEV IoU, detection AP, prediction metrics (minADE/minFDE/MR/EPA), Evaluator.

Across processes the Evaluator takes a gather callable (``trainer.runtime.process_group.gather_objects``).
"""

from trainer.eval.ap import average_precision, detection_tp_flags, voc_average_precision
from trainer.eval.config import EvalConfig
from trainer.eval.evaluator import Evaluator, unique_by_key
from trainer.eval.iou import bev_iou, box_corners_bev, centre_distance_bev
from trainer.eval.matching import greedy_match
from trainer.eval.prediction import PredictionSummary, min_ade_fde, summarize_prediction
from trainer.eval.records import FrameRecord, make_frame_record
from trainer.eval.summary import summarize_records
from trainer.eval.table import format_table

__all__ = [
    "EvalConfig",
    "Evaluator",
    "FrameRecord",
    "PredictionSummary",
    "average_precision",
    "bev_iou",
    "box_corners_bev",
    "centre_distance_bev",
    "detection_tp_flags",
    "format_table",
    "greedy_match",
    "make_frame_record",
    "min_ade_fde",
    "summarize_prediction",
    "summarize_records",
    "unique_by_key",
    "voc_average_precision",
]
