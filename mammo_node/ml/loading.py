"""Which model the node runs: the configured bundle, or the packaged demo bundle."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mammo_node.config import Settings

logger = logging.getLogger(__name__)


def bundle_path(settings: Settings) -> Path:
    from mammo_node.ml.bundle import default_bundle_path

    return settings.model_bundle or default_bundle_path()


def load_scorer(settings: Settings):  # type: ignore[no-untyped-def]  # torch imported lazily
    """Load and verify the bundle (sha256), then build the ensemble scorer on its device."""
    # OpenMP threads that spin between operations take the CPU from the threads receiving
    # images; must be set before torch starts its thread pool
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mammo_node.ml.bundle import load_bundle
    from mammo_node.ml.inference import EnsembleScorer

    path = bundle_path(settings)
    bundle = load_bundle(path, device="cpu")
    scorer = EnsembleScorer(bundle, device=settings.device, precision=settings.precision)
    info = scorer.info
    if info.is_demo:
        logger.warning(
            "using the DEMO model %s %s (trained on synthetic images; not for clinical use). "
            "Set MAMMO_MODEL_BUNDLE to a bundle trained on your site's exams.",
            info.name,
            info.version,
        )
    logger.info("model %s %s on %s (%s)", info.name, info.version, scorer.device, scorer.precision)
    return scorer
