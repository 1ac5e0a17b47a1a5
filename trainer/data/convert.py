"""OpenCOOD / V2XPnP-Seq tree -> WebDataset shards of schema-v2 samples (``trainer.data.shard_write``).

    python -m trainer.data.convert --src data/v2xpnp/train --out 'shards/train-%06d.tar' --mode vc

One sample per (scenario, ego agent, t). With ``--skip-bad`` a malformed source file makes its
frame count as missing (a sample whose ego frame at t is bad is skipped) and the damage is
counted in the summary printed at the end; without it the first malformed file is an error.
Shards are written under temporary names and renamed when the whole conversion succeeded: a failed
one leaves no new shard and no temporary file. Exit codes: 0 done, 2 bad input (a malformed source
file without ``--skip-bad``, a missing source, an output that cannot be written, no sample at all).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from trainer.data.build import FrameReader, build_delayed, build_sample, ego_allowed, sample_times
from trainer.data.box_range import RANGE_RULES
from trainer.data.config import ConvertConfig
from trainer.data.opencood import scan_split
from trainer.data.pointio import SourceFormatError
from trainer.data.sample import MODES
from trainer.data.shard_write import ShardSink
from trainer.data.taxonomy import CUSTOM, TAXONOMIES
from trainer.data.type_report import type_report, unmapped_types

EXIT_BAD_INPUT = 2

@dataclass
class ConvertSummary:
    """What a conversion wrote and what it skipped."""

    samples: int = 0
    """Samples written."""
    frames: int = 0
    """Agent-frame records written (each frame once per shard that uses it)."""
    shards: list[str] = field(default_factory=list)
    """Shard files written."""
    skipped_samples: int = 0
    """Samples not written because the ego frame at t was malformed (only with skip_bad)."""
    bad_files: dict[str, str] = field(default_factory=dict)
    """Malformed source file -> reason (only with skip_bad)."""
    type_counts: Counter = field(default_factory=Counter)
    """Objects of the written samples' targets by normalised type (an object counts once per sample)."""
    taxonomy: str = "v2xpnp"
    """Taxonomy the report judges ``type_counts`` against."""
    dropped_points: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Point file -> (rows dropped as non-finite, rows dropped in the ego footprint), for files with any."""

    def absorb(self, reader: FrameReader) -> None:
        """Take a finished scenario reader's malformed files and dropped-point counts."""
        self.bad_files.update(reader.bad_files)
        self.dropped_points.update({path: n for path, n in reader.dropped_points.items() if any(n)})

    @property
    def unmapped(self) -> dict[str, int]:
        """Types found that the taxonomy neither groups nor drops, with counts."""
        return unmapped_types(self.type_counts, self.taxonomy)

    def report(self) -> str:
        lines = [f"wrote {self.samples} samples ({self.frames} agent-frames) to {len(self.shards)} shard(s)",
                 f"skipped {self.skipped_samples} sample(s); {len(self.bad_files)} malformed file(s)"]
        lines += [f"  bad: {path}: {why}" for path, why in sorted(self.bad_files.items())]
        nonfinite = sum(n for n, _ in self.dropped_points.values())
        ego = sum(e for _, e in self.dropped_points.values())
        lines.append(f"dropped {nonfinite} point(s) with non-finite x/y/z in "
                     f"{sum(1 for n, _ in self.dropped_points.values() if n)} file(s)"
                     + (f"; {ego} point(s) in the ego footprint" if ego else ""))
        lines += type_report(self.type_counts, self.taxonomy)
        return "\n".join(lines)


def convert(
    src: Path | str, out_pattern: str, cfg: ConvertConfig, *, skip_bad: bool = False, maxcount: int = 1000,
    progress: bool = True,
) -> ConvertSummary:
    """Convert the split directory ``src`` into shards named by ``out_pattern`` (``%06d`` = shard index)."""
    sink = ShardSink(out_pattern, maxcount=maxcount)  # checks the pattern and maxcount before any work
    scenarios = scan_split(src)
    jobs = [(scn, ego, t) for scn in scenarios for ego in sorted(scn.agents) if ego_allowed(cfg.mode, ego)
            for t in sample_times(scn, ego, cfg)]
    summary = ConvertSummary(taxonomy=cfg.taxonomy)
    reader: FrameReader | None = None
    with sink:
        for scn, ego, t in tqdm(jobs, desc=f"convert {cfg.mode}", unit="sample", disable=not progress):
            if reader is None or reader.scenario is not scn:
                if reader is not None:
                    summary.absorb(reader)
                reader = FrameReader(scn, cfg, skip_bad=skip_bad)
            sample = build_sample(reader, ego, t, cfg)
            if sample is None:
                summary.skipped_samples += 1
                continue
            sink.write(sample, build_delayed(reader, sample, t, cfg) if cfg.delay_frames else None)
            summary.type_counts.update(sample.meta["obj_type_names"][i] for i in sample.obj_types.tolist())
    if reader is not None:
        summary.absorb(reader)
    summary.samples, summary.frames, summary.shards = sink.samples, sink.frames, list(sink.shards)
    return summary


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ConvertConfig`` as command-line flags (``convert_config`` reads them back)."""
    p.add_argument("--mode", choices=MODES, default="vc")
    p.add_argument("--max-agents", type=int, default=4)
    p.add_argument("--comm-range", type=float, default=50.0)
    p.add_argument("--history", type=int, default=5)
    p.add_argument("--history-stride", type=int, default=5)
    p.add_argument("--future", type=int, default=6)
    p.add_argument("--future-stride", type=int, default=5)
    p.add_argument("--sample-stride", type=int, default=5, help="raw frames between sample times")
    p.add_argument("--partial-windows", action="store_true", help="also cut samples near scenario ends")
    p.add_argument("--delay-frames", type=int, default=0,
                   help="also store collaborators' frames delayed by 1..N raw frames (latency evaluation / training)")
    p.add_argument("--target-range", type=float, nargs=4, default=[-70.4, -40.0, 70.4, 40.0],
                   metavar=("X_MIN", "Y_MIN", "X_MAX", "Y_MAX"))
    p.add_argument("--taxonomy", choices=[*TAXONOMIES, CUSTOM], default=ConvertConfig.taxonomy,
                   help="class taxonomy the object types are checked against (and its default obj_type)")
    p.add_argument("--default-obj-type", default=None,
                   help="type of a YAML object without obj_type (default: the taxonomy's; else an error)")
    p.add_argument("--box-range-rule", choices=RANGE_RULES, default=ConvertConfig.box_range_rule,
                   help="how --target-range keeps a box: its centre, all BEV corners (OpenCOOD), any (V2X-Real)")
    p.add_argument("--zero-intensity", action="store_true", help="write every intensity as 0 (as V2X-Real loads)")
    p.add_argument("--mask-ego-points", action="store_true",
                   help="drop each agent's points in its own footprint (OpenCOOD / V2X-Real's mask_ego_points)")


def convert_config(args: argparse.Namespace) -> ConvertConfig:
    """The ``ConvertConfig`` of flags added by ``add_convert_arguments`` (``ValueError`` for bad values)."""
    return ConvertConfig(
        mode=args.mode, max_agents=args.max_agents, comm_range=args.comm_range, history=args.history,
        history_stride=args.history_stride, future=args.future, future_stride=args.future_stride,
        sample_stride=args.sample_stride, full_windows=not args.partial_windows, target_range=args.target_range,
        taxonomy=args.taxonomy, default_obj_type=args.default_obj_type, box_range_rule=args.box_range_rule,
        zero_intensity=args.zero_intensity, mask_ego_points=args.mask_ego_points, delay_frames=args.delay_frames,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.data.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="split directory: scenario/agent_id/timestamp.{yaml,pcd|bin}")
    p.add_argument("--out", required=True, help="shard pattern, e.g. 'shards/train-%%06d.tar'")
    add_convert_arguments(p)
    p.add_argument("--maxcount", type=int, default=1000,
                   help="samples per shard (a loader worker holds up to one shard's frames in memory)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count malformed source files")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = convert_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        summary = convert(args.src, args.out, cfg, skip_bad=args.skip_bad, maxcount=args.maxcount,
                          progress=not args.no_progress)
    except SourceFormatError as err:
        print(f"error: malformed source file {err.path}: {err.what}\nno shard was written; fix or remove the "
              "file, or pass --skip-bad to skip and count malformed files", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as err:  # bad option or --out pattern, missing source, unwritable output, clash
        print(f"error: {err}\nno shard was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary.report())
    if summary.samples == 0:
        print("error: no samples written (check --src and --mode)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
