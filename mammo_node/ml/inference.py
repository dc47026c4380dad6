"""Scoring an exam with a loaded bundle, as pure stages (no database, network or files).

Stages per view, each timed: ``load`` (decode pixels on the host) -> ``preprocess`` (one
table lookup for the LUTs, orient, rescale, crop; hires image for the ROI) ->
``holistic_saliency`` (score + input gradient + COA) -> ``attention`` (ROI cut at the COA,
attention score) -> ``postprocess`` (saliency map onto the rescaled grid in the stored
orientation, a :class:`~mammo_node.domain.SaliencyMap`: each writer resamples it to its own
grid, and the full-size map is never made). Everything after the decode runs as torch ops on
the model's device (``preprocess.prepare_on_device``): on CUDA the 16-bit pixels are uploaded
once from pinned memory, the ROI is cut where the COA is without a copy back to the host, and
the results come back in one copy per batch. Full-size pixels are dropped after
preprocessing.

``score_exams`` scores several exams (the worker's batches, MAMMO_SCORING_BATCH_SIZE): on CUDA
all their views go through each model as one batch; on CPU one view at a time (a batch is no
faster per image there and needs far more memory). Each exam gets its own outcome. On CUDA the
stage timings are where the host waited (``sync_stages`` makes them the device's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from pydicom import Dataset

from mammo_node.domain import BundleInfo, ExamInference, SaliencyMap, Slot, ViewInference
from mammo_node.errors import ModelError
from mammo_node.ml.bundle import LoadedBundle
from mammo_node.ml.preprocess import Geometry, normalise, prepare_on_device
from mammo_node.ml.roi import cut_roi_window, roi_from_origin, roi_origin_tensor
from mammo_node.ml.saliency import forward_scores, input_saliency
from mammo_node.ml.scoring import ensemble_score, score_exam, verdicts

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else must be usable here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(
            f'Argument "device" should be auto, cpu or cuda[:N], got {device!r}.'
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f'Argument "device" is {device!r} but no CUDA device is available.')
    return resolved


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.cpu._is_avx512_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32).

    "auto" picks bf16 where the hardware computes it natively (CUDA with bf16, CPUs with
    AVX512_BF16 / AMX). Measured with ``make bench-model`` on this 2-core CPU: ResNet-101 at
    976 px runs 4.5x (saliency) and 4x (forward) faster than fp32; on 24 synthetic views the
    demo bundle's ensemble score moved by 0.12 on average (max 0.9; score spread 4.2), the COA
    by a median 1.9 stored px (max 12 of 416), exam ranking unchanged (Spearman 1.0) and no
    operating-point verdict flipped. Use "fp32" where bit-for-bit reproducibility matters.
    """
    if precision not in PRECISIONS:
        raise ModelError(f'Argument "precision" should be one of {PRECISIONS}, got {precision!r}.')
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type not in {"cpu", "cuda"}:
            raise ModelError(f'bf16 precision is not available on device "{device}".')
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported(device) else None


@dataclass
class _Prepared:
    """One view on the model's device: its input, its hires image (stored orientation)."""

    exam: int  # index of its exam in the call
    ds: Dataset
    slot: Slot
    geometry: Geometry
    tensor: torch.Tensor  # (1, S, S) normalised
    hires: torch.Tensor | None
    timings: dict[str, float]


ExamOutcome = ExamInference | Exception
"""What :meth:`EnsembleScorer.score_exams` gives per exam: its inference, or why it failed."""


class EnsembleScorer:
    """Holistic + attention ensemble of a bundle, scoring DICOM views and exams."""

    def __init__(
        self, bundle: LoadedBundle, *, device: str = "auto", precision: str = "auto"
    ) -> None:
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.channels_last = self.autocast_dtype is not None
        self.settings = bundle.manifest.preprocess
        # views per model pass: on CUDA every view of the exams of one call (up to
        # MAMMO_SCORING_BATCH_SIZE exams); on CPU one (a batch is no faster per image there
        # and needs far more memory)
        self.batch_size = 0 if self.device.type == "cuda" else 1
        # benchmarks only: wait for the device at each stage end so that the per-stage
        # timings are the device's (on CUDA the stages otherwise run ahead asynchronously)
        self.sync_stages = False
        self._info = bundle.info
        self._calibration = bundle.calibration  # None: the exam score is all there is
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.holistic = bundle.holistic.to(self.device, memory_format=memory).eval()
        self.attention = bundle.attention.to(self.device, memory_format=memory).eval()
        for model in (self.holistic, self.attention):
            for p in model.parameters():
                p.requires_grad_(False)

    @property
    def info(self) -> BundleInfo:
        return self._info

    @property
    def precision(self) -> str:
        return "fp32" if self.autocast_dtype is None else "bf16"

    # --- stages ------------------------------------------------------------------------

    def prepare(self, ds: Dataset, slot: Slot, exam: int = 0) -> _Prepared:
        """load (decode) + preprocess one view; the pixels go to the model's device once."""
        view = prepare_on_device(
            ds, laterality=slot.laterality, settings=self.settings, device=self.device
        )
        return _Prepared(exam, ds, slot, view.geometry, view.tensor, view.hires, view.timings)

    def _score_batch(self, batch: list[_Prepared]) -> list[ViewInference]:
        n = len(batch)
        t0 = time.perf_counter()
        images = torch.stack([p.tensor for p in batch])
        sal = input_saliency(
            self.holistic,
            images,
            autocast_dtype=self.autocast_dtype,
            channels_last=self.channels_last,
            smoothing=self.settings.saliency_smoothing,
            coa_rule=self.settings.coa_rule,
        )
        self._stage_end()
        t1 = time.perf_counter()
        # the ROI is cut where the COA is, on the device: no host round trip in between
        roi_size = self.settings.roi_size
        origins, crops = [], []
        for i, p in enumerate(batch):
            if p.hires is None:
                raise ModelError("A view was prepared without its hires image; cannot cut a ROI.")
            origin = roi_origin_tensor(p.geometry, sal.coa[i], roi_size)
            origins.append(origin)
            crops.append(
                normalise(cut_roi_window(p.hires, p.geometry, origin, roi_size), self.settings)
            )
            p.hires = None  # the largest array; not needed any more
        attention = forward_scores(
            self.attention,
            torch.stack(crops),
            autocast_dtype=self.autocast_dtype,
            channels_last=self.channels_last,
        )
        self._stage_end()
        t2 = time.perf_counter()
        maps = []  # on the rescaled grid; each writer resamples it once to its own grid
        for i, p in enumerate(batch):
            grid = p.geometry.saliency_on_scaled_grid(sal.saliency[i])
            peak = grid.max()
            maps.append(grid.div_(torch.where(peak > 0, peak, torch.ones_like(peak))))
        # one copy back for the whole batch
        holistic = sal.scores.cpu().tolist()
        attention_scores = attention.cpu().tolist()
        coas = sal.coa.cpu().tolist()
        origin_list = torch.stack(origins).cpu().tolist()
        host_maps = [m.cpu().numpy() for m in maps]
        post = (time.perf_counter() - t2) / n
        out: list[ViewInference] = []
        for i, p in enumerate(batch):
            coa_stored, box = roi_from_origin(
                p.geometry,
                (coas[i][0], coas[i][1]),
                (origin_list[i][0], origin_list[i][1]),
                roi_size,
            )
            timings = dict(p.timings)
            timings.update(
                holistic_saliency=(t1 - t0) / n, attention=(t2 - t1) / n, postprocess=post
            )
            h, a = float(holistic[i]), float(attention_scores[i])
            out.append(
                ViewInference(
                    sop_instance_uid=str(p.ds.get("SOPInstanceUID", "")),
                    slot=p.slot,
                    holistic=h,
                    attention=a,
                    ensemble=ensemble_score(h, a),
                    coa=coa_stored,
                    roi=box,
                    saliency=SaliencyMap(host_maps[i], stored_shape=p.geometry.stored_shape),
                    timings=timings,
                )
            )
        return out

    def _stage_end(self) -> None:
        if self.sync_stages and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- public ------------------------------------------------------------------------

    def score_view(self, ds: Dataset, slot: Slot) -> ViewInference:
        """One view; coordinates are on ds's stored pixel grid, the saliency map over it."""
        return self._score_batch([self.prepare(ds, slot)])[0]

    def score_exam(self, datasets: Mapping[Slot, Dataset], study_uid: str) -> ExamInference:
        """All views of an exam -> view, breast and exam scores, verdicts and timings."""
        outcome = self.score_exams([(datasets, study_uid)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def score_exams(self, exams: Sequence[tuple[Mapping[Slot, Dataset], str]]) -> list[ExamOutcome]:
        """Several exams in model batches (on CUDA all their views in one pass): per exam its
        inference or the exception that stopped it. A view that cannot be prepared fails its
        exam only; a model pass that fails for a batch of several exams is run again exam by
        exam, so one bad exam never fails the others."""
        t0 = time.perf_counter()
        outcomes: list[ExamOutcome | None] = [None] * len(exams)
        views: dict[int, dict[Slot, ViewInference]] = {i: {} for i in range(len(exams))}
        todo = [(i, s) for i, (datasets, _) in enumerate(exams) for s in sorted(datasets)]
        step = self.batch_size or len(todo) or 1
        for start in range(0, len(todo), step):
            batch: list[_Prepared] = []
            for i, slot in todo[start : start + step]:
                if outcomes[i] is None:
                    try:
                        batch.append(self.prepare(exams[i][0][slot], slot, i))
                    except Exception as exc:  # that exam's image; the others go on
                        outcomes[i] = exc
            batch = [p for p in batch if outcomes[p.exam] is None]
            for p, view in self._score_isolated(batch, outcomes):
                views[p.exam][view.slot] = view
        for i, (_, study_uid) in enumerate(exams):
            if outcomes[i] is None:
                try:
                    outcomes[i] = self._exam_inference(study_uid, views[i], t0, len(exams))
                except Exception as exc:
                    outcomes[i] = exc
        return [o for o in outcomes if o is not None]

    def _score_isolated(
        self, batch: list[_Prepared], outcomes: list[ExamOutcome | None]
    ) -> list[tuple[_Prepared, ViewInference]]:
        if not batch:
            return []
        exams = sorted({p.exam for p in batch})
        try:
            return list(zip(batch, self._score_batch(batch), strict=True))
        except Exception as exc:
            if len(exams) == 1:
                outcomes[exams[0]] = exc
                return []
            logger.warning(
                "a batch of %d exams failed (%s); scoring them one by one", len(exams), exc
            )
        # out of the except block: the failed pass's traceback (and the device memory its
        # frames hold) is gone before the retries
        views = [(p.ds, p.slot, p.exam) for p in batch]
        batch.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        done: list[tuple[_Prepared, ViewInference]] = []
        for e in exams:
            try:  # prepared again: the failed pass may have used the hires images
                again = [self.prepare(ds, slot, e) for ds, slot, x in views if x == e]
            except Exception as again_exc:
                outcomes[e] = again_exc
                continue
            done += self._score_isolated(again, outcomes)
        return done

    def _exam_inference(
        self, study_uid: str, views: dict[Slot, ViewInference], started: float, exams: int
    ) -> ExamInference:
        scores = score_exam({slot: v.ensemble for slot, v in views.items()})
        timings: dict[str, float] = {}
        for view in views.values():
            for stage, seconds in view.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        timings["total"] = (time.perf_counter() - started) / exams
        probability, category = self.read_exam_score(scores.exam_score)
        return ExamInference(
            study_uid=study_uid,
            views=views,
            scores=scores,
            bundle=self._info,
            timings=timings,
            verdicts=verdicts(scores.exam_score, self._info.operating_points),
            probability=probability,
            category=category,
        )

    def read_exam_score(self, exam_score: float) -> tuple[float | None, int | None]:
        """What the bundle's calibration makes of an exam score: (probability of screening
        cancer at its stated prevalence, 1-10 category); (None, None) for an uncalibrated
        bundle, whose score is reported with its own honest unit only."""
        calibration = self._calibration
        if calibration is None:
            return None, None
        category = calibration.category(exam_score) if calibration.category_edges else None
        return calibration.probability(exam_score), category
