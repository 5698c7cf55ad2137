"""Evaluate branch weights on a test split: the reference LRNet metrics and more, in one pass.

`evaluate` scores every block of a `lrnet.datasets.BlockSet` in large batches (one forward pass
per branch and batch, no Python loop over blocks or videos), merges the branches, aggregates
blocks into video scores with `lrnet.scoring.aggregate_blocks` and computes the metrics of
`lrnet.metrics`. Videos too short to give one block (frames <= block size) are not scored: they
are listed as skipped and left out of every video-level metric (the reference crashes on them).

Every video also gets the 95% interval of its score (`lrnet.scoring.video_intervals`), its call at
the threshold used (the weights' calibrated one, or 0.5) and a verdict that is "uncertain" when the
interval contains that threshold; the report adds the confusion matrix at that threshold and the
TPR at FPR 1%, 5% and 10%. The reference's metrics (accuracies at 0.5, AUC) are unchanged.
`calibrate_threshold` picks a threshold on a (validation) report at the EER or a target FPR.

`save_report` writes ``metrics.json``, ``videos.csv`` and ``roc.png``; `evaluate_protocols`
runs one set of weights on several datasets and compression levels and tabulates video AUC and
accuracy (cross-manipulation, cross-compression, cross-dataset protocols).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import metrics as M
from .atomic import atomic_path, atomic_write_text, save_figure, writing
from .errors import LrnetError
from .features import BRANCHES
from .scoring import (AGGREGATIONS, DEFAULT_AGGREGATION, THRESHOLD, aggregate_blocks, block_fake_probabilities, decide,
                      interval_method, merge_branches, video_intervals)
from .vocab import jsonable

if TYPE_CHECKING:
    from .datasets import BlockSet

REPORT_FILES = {"json": "metrics.json", "csv": "videos.csv", "roc": "roc.png"}
FPR_TARGETS = (0.01, 0.05, 0.10)
CSV_FIELDS = ["video", "label", "frames", "blocks", "score", "verdict", "call", "interval_lo", "interval_hi"]


@dataclass
class EvaluationReport:
    """Everything one evaluation produced. Per-video arrays are ``(n_videos,)`` in the split's
    video order, skipped videos included (score NaN); per-block arrays are ``(n_blocks,)``."""

    dataset: str
    weights: str
    branches: Tuple[str, ...]
    aggregation: str
    block_size: int
    # metrics (None = undefined, see `undefined`)
    branch_accuracy: Dict[str, Optional[float]]
    sample_accuracy: Optional[float]  # merged rule p_g1 + p_g2 >= 1 (one branch: p >= 0.5)
    video_accuracy: Optional[float]
    video_auc: Optional[float]
    video_eer: Optional[float]
    video_ap: Optional[float]
    sample_auc: Optional[float]
    undefined: Dict[str, str]  # metric name -> why it could not be computed
    videos_per_class: Dict[str, int]  # scored videos
    blocks_per_class: Dict[str, int]
    skipped_per_class: Dict[str, int]
    roc: Optional[M.RocCurve]  # video-level
    # per video
    videos: List[str]
    video_labels: np.ndarray
    video_frames: np.ndarray
    video_blocks: np.ndarray
    video_scores: np.ndarray  # float64, NaN when skipped
    # per block
    block_labels: np.ndarray = field(repr=False)
    block_scores: np.ndarray = field(repr=False)  # merged p(fake), float32
    branch_block_scores: Dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    seconds: float = 0.0  # scoring time (model + metrics), excluding loading
    synthetic: bool = False  # the split is lrnet's generated stand-in data, not real landmarks
    # operating point: calls, verdicts and the confusion matrix use `threshold`
    threshold: float = THRESHOLD
    threshold_source: str = "default"
    uncertain: bool = True  # verdicts say "uncertain" when the interval contains the threshold
    video_intervals: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 2)))  # (n_videos, 2)
    video_accuracy_at_threshold: Optional[float] = None
    confusion: Optional[Dict[str, int]] = None  # tp/fp/tn/fn over scored videos at `threshold`
    tpr_at_fpr: Optional[Dict[float, float]] = None  # FPR budget -> TPR (None: one class)

    def calls_and_verdicts(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(n_videos,)`` calls and verdicts at the report's threshold (see `lrnet.scoring.decide`)."""
        return decide(self.video_scores, self.video_intervals, self.threshold, self.uncertain)

    @property
    def n_uncertain(self) -> int:
        return int(np.count_nonzero(self.calls_and_verdicts()[1] == "uncertain"))

    @property
    def n_videos(self) -> int:
        """Scored videos (skipped ones excluded)."""
        return int(np.count_nonzero(self.video_blocks))

    @property
    def n_blocks(self) -> int:
        return int(self.block_labels.size)

    @property
    def skipped(self) -> List[Dict[str, Any]]:
        """Videos that gave no block: ``{"video", "label", "frames", "reason"}`` each."""
        out = []
        for i in np.flatnonzero(self.video_blocks == 0):
            frames = int(self.video_frames[i])
            out.append({"video": self.videos[i], "label": int(self.video_labels[i]), "frames": frames,
                        "reason": f"too short: {frames} frame{'s' if frames != 1 else ''}, "
                                  f"a block needs more than {self.block_size}"})
        return out

    def metrics(self) -> Dict[str, Any]:
        """The scalar metrics, JSON-ready (None where undefined)."""
        return {
            **{f"accuracy_{b}": v for b, v in self.branch_accuracy.items()},
            "accuracy_sample": self.sample_accuracy,
            "accuracy_video": self.video_accuracy,
            "auc_video": self.video_auc,
            "eer_video": self.video_eer,
            "ap_video": self.video_ap,
            "auc_sample": self.sample_auc,
            "accuracy_video_at_threshold": self.video_accuracy_at_threshold,
            **{f"tpr_at_fpr_{t:g}": (self.tpr_at_fpr or {}).get(t) for t in FPR_TARGETS},
        }

    def video_rows(self) -> List[Dict[str, Any]]:
        """One row per video: video, label, frames, blocks, score (None if skipped), verdict, call,
        interval ([lo, hi] or None)."""
        rows = []
        calls, verdicts = self.calls_and_verdicts()
        for i, name in enumerate(self.videos):
            score = float(self.video_scores[i])
            lo, hi = (float(v) for v in self.video_intervals[i])
            rows.append({"video": name, "label": int(self.video_labels[i]), "frames": int(self.video_frames[i]),
                         "blocks": int(self.video_blocks[i]), "score": None if math.isnan(score) else score,
                         "verdict": str(verdicts[i]), "call": str(calls[i]),
                         "interval": None if math.isnan(score) else [lo, hi]})
        return rows

    def to_dict(self, with_videos: bool = True) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "dataset": self.dataset, "weights": self.weights, "branches": list(self.branches),
            "aggregation": self.aggregation, "block_size": self.block_size, "synthetic": self.synthetic,
            "metrics": self.metrics(), "undefined": dict(self.undefined),
            "videos": self.n_videos, "blocks": self.n_blocks,
            "videos_per_class": self.videos_per_class, "blocks_per_class": self.blocks_per_class,
            "skipped_per_class": self.skipped_per_class, "skipped": self.skipped,
            "roc": self.roc.to_dict() if self.roc is not None else None,
            "threshold": {"value": self.threshold, "source": self.threshold_source},
            "interval": interval_method(self.aggregation), "uncertain_videos": self.n_uncertain,
            "confusion_matrix": self.confusion,
            "seconds": round(self.seconds, 4),
        }
        if with_videos:
            out["per_video"] = self.video_rows()
        return out


def evaluate(weights, test: BlockSet, branches: Optional[Sequence[str]] = None,
             aggregation: str = DEFAULT_AGGREGATION, device=None, batch_size: int = 512, *,
             threshold: Optional[float] = None, uncertain: bool = True) -> EvaluationReport:
    """Score the BlockSet `test` with `weights` (a `lrnet.weights.LoadedWeights`) and compute metrics.

    `branches` defaults to every branch the weights hold (g1 then g2). With one branch, its
    p(fake) is the block score; with two, the merged score ``(p_g1 + p_g2) / 2``. Video scores use
    `aggregation` (see `lrnet.scoring.AGGREGATIONS`). `device` defaults to the models' device.
    `threshold`: the operating point for calls, verdicts and the confusion matrix (None: the
    weights' stored threshold when it fits `aggregation` and the branches, else 0.5).
    """
    from .detector import Detector

    detector = Detector.from_weights(weights, aggregation, branches, threshold, uncertain, device)
    import sklearn.metrics  # noqa: F401  (a one-time ~1 s import: paid here, not inside the timed scoring)

    start = time.perf_counter()
    probs = detector.branch_probabilities(test.blocks, batch_size=batch_size)
    report = report_from_probabilities(probs, test, aggregation, weights.source, threshold=detector.threshold,
                                       threshold_source=detector.threshold_source, uncertain=uncertain)
    report.seconds = time.perf_counter() - start
    return report


def report_from_probabilities(probs: Mapping[str, np.ndarray], test: BlockSet, aggregation: str = DEFAULT_AGGREGATION,
                              weights_source: str = "", *, threshold: float = THRESHOLD,
                              threshold_source: str = "default", uncertain: bool = True) -> EvaluationReport:
    """All metrics from per-branch block p(fake) ``{branch: (n_blocks,)}`` of the BlockSet `test`
    (blocks in ``test.blocks`` order); no model is run. `evaluate` is this after scoring."""
    branches = tuple(b for b in BRANCHES if b in probs)
    n_videos = len(test.videos)
    block_video = np.asarray(test.block_video, dtype=np.int64)
    video_labels = np.asarray(test.video_labels, dtype=np.int64)
    block_labels = video_labels[block_video]
    merged = merge_branches(probs)
    video_frames = np.asarray(test.video_frames, dtype=np.int64)
    video_blocks = np.bincount(block_video, minlength=n_videos)
    video_scores = aggregate_blocks(merged, block_video, n_videos, aggregation)
    scored = video_blocks > 0
    y_v, s_v = video_labels[scored], video_scores[scored]

    undefined: Dict[str, str] = {}
    if block_labels.size == 0:
        undefined["accuracy"] = "no blocks: every video is shorter than one block"
    video_reason = M.undefined_reason(y_v, "videos")
    if video_reason:
        for name in ("auc_video", "eer_video", "ap_video", "roc"):
            undefined[name] = video_reason
    block_reason = M.undefined_reason(block_labels, "blocks")
    if block_reason:
        undefined["auc_sample"] = block_reason

    if len(branches) == 2:
        sample_acc = M.merged_sample_accuracy(probs["g1"], probs["g2"], block_labels)
    else:
        sample_acc = M.branch_accuracy(merged, block_labels)
    return EvaluationReport(
        dataset=test.name, weights=weights_source, branches=branches, aggregation=aggregation,
        block_size=int(test.block_size),
        branch_accuracy={b: M.branch_accuracy(probs[b], block_labels) for b in branches},
        sample_accuracy=sample_acc,
        video_accuracy=M.video_accuracy(s_v, y_v),
        video_auc=M.roc_auc(y_v, s_v),
        video_eer=M.equal_error_rate(y_v, s_v),
        video_ap=M.average_precision(y_v, s_v),
        sample_auc=M.roc_auc(block_labels, merged),
        undefined=undefined,
        videos_per_class=M.class_counts(y_v),
        blocks_per_class=M.class_counts(block_labels),
        skipped_per_class=M.class_counts(video_labels[~scored]),
        roc=M.roc_curve(y_v, s_v),
        videos=list(test.videos), video_labels=video_labels, video_frames=video_frames,
        video_blocks=video_blocks, video_scores=video_scores,
        block_labels=block_labels, block_scores=merged, branch_block_scores=dict(probs),
        synthetic=bool(test.synthetic),
        threshold=float(threshold), threshold_source=threshold_source, uncertain=uncertain,
        video_intervals=video_intervals(merged, block_video, n_videos, aggregation),
        video_accuracy_at_threshold=M.video_accuracy(s_v, y_v, threshold),
        confusion=M.confusion_matrix(y_v, s_v, threshold) if y_v.size else None,
        tpr_at_fpr=M.tpr_at_fpr(y_v, s_v, FPR_TARGETS),
    )


def no_block_reason(report: EvaluationReport) -> Optional[str]:
    """Why nothing could be scored (every video shorter than one block), else None."""
    if report.n_blocks:
        return None
    longest = int(report.video_frames.max()) if report.video_frames.size else 0
    return (f"{report.dataset}: no video had a block: all {len(report.videos)} files have at most {longest} frames, "
            f"a block needs more than {report.block_size} (use a smaller --block-size)")


def calibrate_threshold(report: EvaluationReport, method: str = "eer", target_fpr: Optional[float] = None,
                        dataset: str = "", level: str = "", split: str = "val") -> Dict[str, Any]:
    """Choose a video-score threshold on `report` (a validation split) at the EER or at `target_fpr`.

    Returns the record `lrnet.weights.save_threshold` stores: value, method, target_fpr, dataset,
    level, split, aggregation, branches, and the FPR / TPR it gives on that split. Raises
    `LrnetError` when the split lacks one class (no ROC, so no operating point).
    """
    scored = report.video_blocks > 0
    point = M.operating_point(report.video_labels[scored], report.video_scores[scored], method, target_fpr)
    if point is None:
        reason = report.undefined.get("roc", "no scored videos")
        raise LrnetError(f"{report.dataset}: cannot calibrate a threshold ({reason})")
    return {"value": point.threshold, "method": method, "target_fpr": point.target_fpr, "dataset": dataset,
            "level": level, "split": split, "aggregation": report.aggregation, "branches": list(report.branches),
            "fpr": point.fpr, "tpr": point.tpr, "videos": report.n_videos}


# ----------------------------------------------------------------------------- output files

def save_report(report: EvaluationReport, out_dir, plot: bool = True) -> Dict[str, Optional[Path]]:
    """Write ``metrics.json`` (everything but per-block scores), ``videos.csv`` (video, label,
    frames, blocks, score, verdict) and, when the ROC curve is defined, ``roc.png`` into `out_dir`,
    each atomically. Returns ``{"json": path, "csv": path, "roc": path or None}``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LrnetError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    paths: Dict[str, Optional[Path]] = {key: out / name for key, name in REPORT_FILES.items()}
    roc, json_path, csv_path = out / REPORT_FILES["roc"], out / REPORT_FILES["json"], out / REPORT_FILES["csv"]
    if plot and report.roc is not None:
        plot_roc(report.roc, report.video_auc, roc,
                 title=f"ROC (video level) - {report.dataset}, {'+'.join(report.branches)}, {report.aggregation}")
    else:
        paths["roc"] = None
    with writing(json_path):
        atomic_write_text(json_path, report_json(report, paths) + "\n")
    with writing(csv_path):
        atomic_write_text(csv_path, videos_csv(report))
    return paths


def videos_csv(report: EvaluationReport) -> str:
    """``videos.csv``: one row per video (`CSV_FIELDS`), empty cells for skipped videos."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in report.video_rows():
        interval = row.pop("interval")
        writer.writerow({**row, "score": "" if row["score"] is None else f"{row['score']:.6f}",
                         "interval_lo": "" if interval is None else f"{interval[0]:.6f}",
                         "interval_hi": "" if interval is None else f"{interval[1]:.6f}"})
    return buf.getvalue()


def report_json(report: EvaluationReport, paths: Optional[Mapping[str, Optional[Path]]] = None) -> str:
    """The report (metrics, counts, skipped videos, ROC points, per-video rows) as indented JSON;
    NaN and infinity become null."""
    data = report.to_dict()
    if paths is not None:
        data["files"] = {k: str(v) if v else None for k, v in paths.items()}
    return json.dumps(jsonable(data), indent=2)


def plot_roc(curve: M.RocCurve, auc: Optional[float], path, title: str = "ROC (video level)") -> Path:
    """Draw `curve` to `path` (format from the extension; Agg backend: never opens a window),
    atomically (`lrnet.atomic.save_figure`)."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and never touches pyplot/GUIs

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(curve.fpr, curve.tpr, color="darkorange", lw=2,
            label=f"ROC curve (AUC = {auc:.4f})" if auc is not None else "ROC curve")
    ax.plot([0, 1], [0, 1], color="navy", lw=1, linestyle="--")
    ax.set(xlim=(0.0, 1.0), ylim=(0.0, 1.05), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- text output

def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_report(report: EvaluationReport, paths: Optional[Mapping[str, Optional[Path]]] = None) -> str:
    """A readable report: the reference's result lines first, then lrnet's extras."""
    lines = ["#----Evaluation  Results----#",
             f"dataset: {report.dataset}   weights: {report.weights}   branches: {'+'.join(report.branches)}   "
             f"block size: {report.block_size}"]
    if report.synthetic:
        lines.append("NOTE: synthetic landmark data (lrnet's generator), not real FF++ landmarks: these numbers "
                     "only show that the pipeline works")
    for branch, acc in report.branch_accuracy.items():
        lines.append(f"Evaluation ({branch}) - Acc: {_fmt(acc)}")
    rule = "g1 + g2 >= 1" if len(report.branches) == 2 else f"{report.branches[0]} >= 0.5"
    lines.append(f"Accuracy (sample-level): {_fmt(report.sample_accuracy)}   [{rule}]")
    lines.append(f"Accuracy (video-level): {_fmt(report.video_accuracy)}   [video score >= 0.5]")
    lines.append(f"AUC (video-level): {_fmt(report.video_auc)}")
    lines.append("#----------Extras-----------#")
    lines.append(f"Aggregation (block -> video score): {report.aggregation}")
    lines.append(f"EER (video-level): {_fmt(report.video_eer)}")
    lines.append(f"Average precision (video-level): {_fmt(report.video_ap)}")
    lines.append(f"AUC (sample-level): {_fmt(report.sample_auc)}")
    lines += _operating_lines(report)
    v, b, s = report.videos_per_class, report.blocks_per_class, report.skipped_per_class
    lines.append(f"Videos scored: {report.n_videos} ({v['real']} real, {v['fake']} fake); "
                 f"blocks: {report.n_blocks} ({b['real']} real, {b['fake']} fake)")
    if report.seconds:
        lines.append(f"Scoring time (model + metrics, after loading): {report.seconds:.3f} s")
    skipped = report.skipped
    if skipped:
        lines.append(f"Skipped (too short for one block of {report.block_size} frames): {len(skipped)} videos "
                     f"({s['real']} real, {s['fake']} fake)")
        for item in skipped[:10]:
            lines.append(f"  {item['video']}: {item['frames']} frames")
        if len(skipped) > 10:
            lines.append(f"  ... and {len(skipped) - 10} more (see videos.csv)")
    reasons = sorted(set(report.undefined.values()))
    for reason in reasons:
        names = ", ".join(k for k, r in report.undefined.items() if r == reason)
        lines.append(f"Undefined ({names}): {reason}")
    if paths:
        if paths.get("roc"):
            lines.append(f"ROC curve: {paths['roc']}")
        elif "roc" in report.undefined:
            lines.append("ROC curve: not drawn (undefined, see above)")
        for key in ("json", "csv"):
            if paths.get(key):
                lines.append(f"{'Metrics (JSON)' if key == 'json' else 'Per-video scores (CSV)'}: {paths[key]}")
    lines.append("#------------End------------#")
    return "\n".join(lines)


def _operating_lines(report: EvaluationReport) -> List[str]:
    """Threshold, accuracy and confusion matrix at it, uncertain verdicts, TPR at FPR budgets."""
    lines = [f"Threshold: {report.threshold:.4f} ({report.threshold_source})",
             f"Accuracy (video-level) at the threshold: {_fmt(report.video_accuracy_at_threshold)}"]
    if report.confusion:
        c = report.confusion
        lines.append(f"Confusion matrix at the threshold (videos): TP {c['tp']}  FP {c['fp']}  TN {c['tn']}  "
                     f"FN {c['fn']}   [fake = positive]")
    if report.uncertain:
        lines.append(f"Uncertain verdicts (95% interval contains the threshold): {report.n_uncertain} of "
                     f"{report.n_videos} videos   [{interval_method(report.aggregation)}]")
    rates = report.tpr_at_fpr
    lines.append("TPR at FPR " + ", ".join(f"{t:.0%}: {_fmt((rates or {}).get(t))}" for t in FPR_TARGETS))
    return lines


def format_metrics_table(reports: Mapping[str, EvaluationReport]) -> str:
    """One column per named report, one row per metric (for comparing runs side by side)."""
    names = list(reports)
    rows: List[Tuple[str, List[str]]] = []
    branch_names = [b for b in BRANCHES if any(b in r.branch_accuracy for r in reports.values())]
    for b in branch_names:
        rows.append((f"accuracy {b} (blocks)", [_fmt(r.branch_accuracy.get(b)) for r in reports.values()]))
    for label, attr in (("accuracy merged (blocks)", "sample_accuracy"), ("accuracy (videos)", "video_accuracy"),
                        ("AUC (videos)", "video_auc"), ("EER (videos)", "video_eer"),
                        ("AP (videos)", "video_ap"), ("AUC (blocks)", "sample_auc")):
        rows.append((label, [_fmt(getattr(r, attr)) for r in reports.values()]))
    rows.append(("videos scored / skipped", [f"{r.n_videos}/{len(r.skipped)}" for r in reports.values()]))
    rows.append(("aggregation", [r.aggregation for r in reports.values()]))
    w0 = max(len(label) for label, _ in rows)
    widths = [max(len(n), *(len(vals[i]) for _, vals in rows)) for i, n in enumerate(names)]
    out = ["  ".join([f"{'metric':<{w0}}"] + [f"{n:>{w}}" for n, w in zip(names, widths)])]
    out.append("  ".join(["-" * w0] + ["-" * w for w in widths]))
    for label, vals in rows:
        out.append("  ".join([f"{label:<{w0}}"] + [f"{v:>{w}}" for v, w in zip(vals, widths)]))
    return "\n".join(out)


# ----------------------------------------------------------------------------- protocols

@dataclass
class ProtocolCell:
    """One (dataset, level) evaluation of a protocol table, or why it is missing."""

    dataset: str
    level: str
    report: Optional[EvaluationReport] = None
    missing: Optional[str] = None  # reason, when the data could not be loaded

    @property
    def auc(self) -> Optional[float]:
        return self.report.video_auc if self.report else None

    @property
    def accuracy(self) -> Optional[float]:
        return self.report.video_accuracy if self.report else None


@dataclass
class ProtocolTable:
    """Video AUC and accuracy of one set of weights over ``rows`` (datasets) x ``columns`` (levels)."""

    weights: str
    split: str
    aggregation: str
    branches: Tuple[str, ...]
    rows: List[str]
    columns: List[str]
    cells: Dict[Tuple[str, str], ProtocolCell]

    @property
    def missing(self) -> List[ProtocolCell]:
        return [c for c in self.cells.values() if c.report is None]

    def to_dict(self) -> Dict[str, Any]:
        return jsonable({
            "weights": self.weights, "split": self.split, "aggregation": self.aggregation,
            "branches": list(self.branches), "rows": self.rows, "columns": self.columns,
            "cells": [{"dataset": c.dataset, "level": c.level, "auc_video": c.auc, "accuracy_video": c.accuracy,
                       "videos": c.report.n_videos if c.report else None,
                       "skipped": len(c.report.skipped) if c.report else None,
                       "undefined": c.report.undefined.get("auc_video") if c.report else None,
                       "missing": c.missing} for c in self.cells.values()],
        })

    def format(self) -> str:
        """Rows = datasets, columns = levels; each cell "AUC / accuracy" (video level), "missing"
        or "n/a" (undefined AUC); reasons listed under the table."""
        def cell_text(c: ProtocolCell) -> str:
            if c.report is None:
                return "missing"
            return f"{_fmt(c.auc)} / {_fmt(c.accuracy)}"

        texts = {k: cell_text(c) for k, c in self.cells.items()}
        w0 = max([len("dataset")] + [len(r) for r in self.rows])
        widths = {col: max(len(col), *(len(texts[(r, col)]) for r in self.rows)) for col in self.columns}
        lines = [f"video AUC / video accuracy   weights: {self.weights}   split: {self.split}   "
                 f"branches: {'+'.join(self.branches)}   aggregation: {self.aggregation}",
                 "  ".join([f"{'dataset':<{w0}}"] + [f"{c:>{widths[c]}}" for c in self.columns]),
                 "  ".join(["-" * w0] + ["-" * widths[c] for c in self.columns])]
        for r in self.rows:
            lines.append("  ".join([f"{r:<{w0}}"] + [f"{texts[(r, c)]:>{widths[c]}}" for c in self.columns]))
        if any(c.report is not None and c.report.synthetic for c in self.cells.values()):
            lines.append("NOTE: synthetic landmark data (lrnet's generator), not real FF++ landmarks")
        for c in self.cells.values():
            if c.missing:
                lines.append(f"missing {c.dataset}/{c.level}: {c.missing}")
            elif c.report is not None and "auc_video" in c.report.undefined:
                lines.append(f"n/a {c.dataset}/{c.level}: {c.report.undefined['auc_video']}")
        return "\n".join(lines)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["dataset", "level", "auc_video", "accuracy_video", "videos", "skipped", "missing"])
        for c in self.cells.values():
            writer.writerow([c.dataset, c.level, "" if c.auc is None else f"{c.auc:.6f}",
                             "" if c.accuracy is None else f"{c.accuracy:.6f}",
                             c.report.n_videos if c.report else "", len(c.report.skipped) if c.report else "",
                             c.missing or ""])
        return buf.getvalue()


def evaluate_protocols(weights, root, datasets: Sequence[str], levels: Sequence[str], split: str = "test",
                       branches: Optional[Sequence[str]] = None, aggregation: str = DEFAULT_AGGREGATION,
                       device=None, block_size: Optional[int] = None, batch_size: int = 512,
                       loader: Optional[Callable[..., Any]] = None,
                       on_cell: Optional[Callable[[ProtocolCell], None]] = None,
                       threshold: Optional[float] = None, uncertain: bool = True,
                       **load_kwargs) -> ProtocolTable:
    """Evaluate one set of weights on every ``dataset x level`` test split.

    A split that cannot be loaded (not prepared, empty, unreadable: any `LrnetError`) becomes a
    cell marked missing with the reason; the others are still evaluated. `loader` defaults to
    `lrnet.datasets.load_split` (called as ``loader(root, dataset, level, split, block_size=...,
    **load_kwargs)``); `on_cell` is called after each cell (progress output). A split in which no
    video gives a block is a missing cell too (`no_block_reason`).
    """
    if loader is None:
        from .datasets import load_split

        loader = load_split
    block_size = block_size or weights.block_size
    used = tuple(b for b in BRANCHES if b in (branches or weights.models))
    cells: Dict[Tuple[str, str], ProtocolCell] = {}
    for dataset in datasets:
        for level in levels:
            cell = ProtocolCell(dataset, level)
            try:
                test = loader(root, dataset, level, split, block_size=block_size, **load_kwargs)
                report = evaluate(weights, test, used, aggregation, device, batch_size=batch_size,
                                  threshold=threshold, uncertain=uncertain)
                cell.missing = no_block_reason(report)
                cell.report = None if cell.missing else report
            except LrnetError as exc:
                cell.missing = str(exc)
            cells[(dataset, level)] = cell
            if on_cell is not None:
                on_cell(cell)
    return ProtocolTable(weights.source, split, aggregation, used, list(datasets), list(levels), cells)


def save_protocol_table(table: ProtocolTable, out_dir) -> Dict[str, Path]:
    """Write ``protocol.json``, ``protocol.csv`` and each evaluated cell's report (in
    ``DATASET_LEVEL/``) into `out_dir`. Returns the table paths."""
    out = Path(out_dir)
    paths = {"json": out / "protocol.json", "csv": out / "protocol.csv"}
    for cell in table.cells.values():
        if cell.report is not None:
            save_report(cell.report, out / f"{safe_name(cell.dataset)}_{cell.level}")
    with writing(paths["json"]):
        atomic_write_text(paths["json"], json.dumps(table.to_dict(), indent=2) + "\n")
    with writing(paths["csv"]):
        atomic_write_text(paths["csv"], table.to_csv())
    return paths


def safe_name(name: str) -> str:
    """A dataset name (possibly a YAML path) as a folder name."""
    stem = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
