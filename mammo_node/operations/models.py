"""Model lifecycle: bundles installed side by side, one active, at most one in shadow.

``mammo-node models add DIR`` verifies a bundle (sha256 of every weights file, the weights
load) and copies it into ``DATA_DIR/models/<name>-<version>-<sha12>``; ``activate`` makes it
the one that scores and sends; ``shadow`` makes it score every exam the active bundle scored,
keeping its scores beside the active ones (``shadow_results``) and sending nothing, in a
child process of its own (``mammo_node.shadow_process``: a crash there costs one shadow
score). The roles are rows, so several nodes sharing one database follow the same switch.

Activation and rollback need no restart: :class:`ActiveBundleScorer` is the worker's scorer
and looks at the active row before each exam (cached for a few seconds); when the row
changed it loads the new bundle and scores the *next* exam with it - the exam being scored
finishes with the bundle it started with, so no exam is lost or scored twice. Every result
records the bundle's content hash (``results.bundle_sha256``: the manifest's sha256, which
holds the sha256 of each weights file).
"""

from __future__ import annotations

import enum
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mammo_node.config import Settings
from mammo_node.db.models import Exam, Instance, ModelBundleRow, Result, ShadowResult, utcnow
from mammo_node.db.session import Database
from mammo_node.domain import ExamInference, ExamState, Slot
from mammo_node.errors import DatabaseError, MammoNodeError, ModelError
from mammo_node.observe import audit
from mammo_node.responses import ScoredExam

logger = logging.getLogger(__name__)

CHECK_SECONDS = 2.0


class ModelRole(enum.StrEnum):
    INSTALLED = "installed"
    ACTIVE = "active"
    SHADOW = "shadow"


class ModelRegistryError(MammoNodeError):
    """A bundle cannot be added, found, or given that role."""


@dataclass(frozen=True)
class InstalledBundle:
    name: str
    version: str
    manifest_sha256: str
    path: str
    role: str
    is_demo: bool
    added_at: str

    @classmethod
    def of(cls, row: ModelBundleRow) -> InstalledBundle:
        return cls(
            row.name,
            row.version,
            row.manifest_sha256,
            row.path,
            row.role,
            row.is_demo,
            row.added_at.isoformat(),
        )

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def models_dir(settings: Settings) -> Path:
    return settings.data_dir / "models"


# --- the registry ---------------------------------------------------------------------------
def add_bundle(
    settings: Settings, db: Database, source: Path, *, actor: str = "cli"
) -> InstalledBundle:
    """Verify ``source`` (sha256, weights load) and install a copy of it."""
    from mammo_node.ml.bundle import load_bundle

    bundle = load_bundle(source, device="cpu")  # raises ModelError with the reason
    info = bundle.info
    sha = bundle.manifest_sha256
    target = models_dir(settings) / f"{info.name}-{info.version}-{sha[:12]}"
    with db.read() as session:
        known = session.scalars(
            select(ModelBundleRow).where(ModelBundleRow.manifest_sha256 == sha)
        ).first()
        if known is not None:
            return InstalledBundle.of(known)
    if not target.exists():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        partial.rename(target)
    with db.session() as session:
        row = ModelBundleRow(
            name=info.name,
            version=info.version,
            manifest_sha256=sha,
            path=str(target.resolve()),
            role=ModelRole.INSTALLED.value,
            is_demo=info.is_demo,
        )
        session.add(row)
        session.flush()
        audit.record_in(session, actor, "model_added", f"{info.name} {info.version}", sha256=sha)
        return InstalledBundle.of(row)


def list_bundles(db: Database) -> list[InstalledBundle]:
    with db.read() as session:
        rows = session.scalars(select(ModelBundleRow).order_by(ModelBundleRow.added_at)).all()
        return [InstalledBundle.of(r) for r in rows]


def _find(session: Any, key: str) -> ModelBundleRow:
    """``name:version``, ``name`` (when one version), or a sha256 prefix (8+ hex digits)."""
    rows = session.scalars(select(ModelBundleRow)).all()
    name, _, version = key.partition(":")
    found = [
        r
        for r in rows
        if (len(key) >= 8 and r.manifest_sha256.startswith(key.lower()))
        or (r.name == name and (not version or r.version == version))
    ]
    if not found:
        known = ", ".join(f"{r.name}:{r.version}" for r in rows) or "none installed"
        raise ModelRegistryError(f"no installed bundle {key!r} (installed: {known})")
    if len(found) > 1:
        raise ModelRegistryError(
            f"{key!r} names {len(found)} bundles; give NAME:VERSION or a sha256 prefix"
        )
    return found[0]


def set_role(db: Database, key: str, role: ModelRole, *, actor: str = "cli") -> InstalledBundle:
    """Make a bundle active or shadow (the previous holder of the role goes back to installed)."""
    with db.session() as session:
        row = _find(session, key)
        if role is ModelRole.SHADOW and row.role == ModelRole.ACTIVE.value:
            raise ModelRegistryError(
                f"{row.name}:{row.version} is the active bundle; it cannot also be the shadow"
            )
        now = utcnow()
        for other in session.scalars(
            select(ModelBundleRow).where(ModelBundleRow.role == role.value)
        ):
            if other.id != row.id:
                other.role, other.changed_at = ModelRole.INSTALLED.value, now
        row.role, row.changed_at = role.value, now
        audit.record_in(
            session,
            actor,
            f"model_{role.value}",
            f"{row.name} {row.version}",
            sha256=row.manifest_sha256,
        )
        return InstalledBundle.of(row)


def clear_shadow(db: Database, *, actor: str = "cli") -> None:
    with db.session() as session:
        for row in session.scalars(
            select(ModelBundleRow).where(ModelBundleRow.role == ModelRole.SHADOW.value)
        ):
            row.role, row.changed_at = ModelRole.INSTALLED.value, utcnow()
            audit.record_in(session, actor, "model_shadow_off", f"{row.name} {row.version}")


def remove_bundle(db: Database, key: str, *, actor: str = "cli") -> InstalledBundle:
    """Uninstall a bundle that is not active (its results keep name, version and hash)."""
    with db.session() as session:
        row = _find(session, key)
        if row.role == ModelRole.ACTIVE.value:
            raise ModelRegistryError(
                f"{row.name}:{row.version} is active: activate another bundle first"
            )
        removed = InstalledBundle.of(row)
        session.delete(row)
        audit.record_in(
            session, actor, "model_removed", f"{row.name} {row.version}", sha256=row.manifest_sha256
        )
    shutil.rmtree(removed.path, ignore_errors=True)
    return removed


def bundle_with_role(db: Database, role: ModelRole) -> tuple[Path, str] | None:
    with db.read() as session:
        row = session.scalars(
            select(ModelBundleRow).where(ModelBundleRow.role == role.value)
        ).first()
        return (Path(row.path), row.manifest_sha256) if row is not None else None


# --- the worker's scorer ------------------------------------------------------------------------
class ActiveBundleScorer:
    """The worker's scorer: the registry's active bundle (else MAMMO_MODEL_BUNDLE / the demo),
    switched between exams when the active row changes."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._lock = threading.Lock()
        self._checked = 0.0
        self._sha: str | None = None
        self._scorer: Any = None
        self._refresh(force=True)

    def _wanted(self) -> tuple[Path, str | None]:
        from mammo_node.ml.loading import bundle_path

        try:
            active = bundle_with_role(self.db, ModelRole.ACTIVE)
        except DatabaseError:
            logger.warning("cannot read the active bundle; keeping the loaded one", exc_info=True)
            active = None
            if self._scorer is not None:
                return Path(), self._sha
        if active is not None:
            return active
        return bundle_path(self.settings), None

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        path, sha = self._wanted()
        if self._scorer is not None and sha == self._sha:
            return
        from mammo_node.ml.bundle import load_bundle
        from mammo_node.ml.inference import EnsembleScorer

        bundle = load_bundle(path, device="cpu")
        scorer = EnsembleScorer(
            bundle, device=self.settings.device, precision=self.settings.precision
        )
        previous = self._scorer.info.label if self._scorer is not None else None
        self._scorer, self._sha = scorer, sha
        if previous is not None:
            logger.info("switched from %s to %s without a restart", previous, scorer.info.label)

    @property
    def info(self) -> Any:
        return self._scorer.info

    @property
    def device(self) -> Any:
        return self._scorer.device

    @property
    def precision(self) -> str:
        return str(self._scorer.precision)

    def _current(self) -> Any:
        """The active bundle's scorer, switched first if another bundle was activated."""
        with self._lock:
            try:
                self._refresh()
            except ModelError:
                logger.exception("the newly activated bundle cannot load; scoring with the old one")
            return self._scorer

    def score_exam(self, datasets: Mapping[Slot, Dataset], study_uid: str) -> ExamInference:
        return self._current().score_exam(datasets, study_uid)

    def score_exams(self, exams: Sequence[tuple[Mapping[Slot, Dataset], str]]) -> list[Any]:
        """Several exams with the active bundle in one batch (an outcome each)."""
        return list(self._current().score_exams(exams))


# --- shadow scoring -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ShadowWork:
    """An exam the shadow bundle has not scored yet: its current result and its images."""

    result_id: int
    exam_id: int
    revision: int
    study_uid: str
    images: dict[str, str]  # sop_instance_uid -> slot


def next_shadow_work(db: Database, sha: str) -> ShadowWork | None:
    """The oldest current result whose exam bundle ``sha`` has neither scored nor failed on
    (exams whose images were pruned are left out: nothing to score)."""
    with db.read() as session:
        pruned = select(Instance.id).where(
            Instance.exam_fk == Result.exam_fk, Instance.pruned_at.is_not(None)
        )
        done = select(ShadowResult.id).where(
            ShadowResult.exam_fk == Result.exam_fk,
            ShadowResult.exam_revision == Result.exam_revision,
            ShadowResult.bundle_sha256 == sha,
        )
        row = session.execute(
            select(Result.id, Result.exam_fk, Result.exam_revision, Result.images, Exam.study_uid)
            .join(Exam, Result.exam_fk == Exam.id)
            .where(
                Exam.state == ExamState.SCORED.value,
                Result.exam_revision == Exam.revision,
                Result.sr_sop_instance_uid != "",
                Result.bundle_sha256 != sha,
                ~done.exists(),
                ~pruned.exists(),
            )
            .order_by(Result.id)
            .limit(1)
        ).first()
    if row is None:
        return None
    result_id, exam_id, revision, images, study_uid = row
    slots = {uid: str(info["slot"]) for uid, info in (images or {}).items()}
    return ShadowWork(result_id, exam_id, revision, study_uid, slots)


def record_shadow_failure(db: Database, result_id: int, sha: str, why: str) -> bool:
    """Mark the exam of ``result_id`` as failed for bundle ``sha`` (it is not tried again);
    returns False when another process recorded that exam first."""
    try:
        with db.session() as session:
            result = session.get(Result, result_id)
            if result is None:
                return False
            bundle = session.scalars(
                select(ModelBundleRow).where(ModelBundleRow.manifest_sha256 == sha)
            ).first()
            session.add(
                ShadowResult(
                    exam_fk=result.exam_fk,
                    exam_revision=result.exam_revision,
                    active_result_fk=result.id,
                    bundle_sha256=sha,
                    model_name=bundle.name if bundle is not None else "unknown",
                    model_version=bundle.version if bundle is not None else "",
                    exam_score=None,
                    failure=why[:500],
                )
            )
        return True
    except DatabaseError as exc:
        if not isinstance(exc.__cause__, IntegrityError):
            raise
        return False


class ShadowScorer:
    """Scores, with the shadow bundle, every exam whose current result has no shadow result.

    It runs in the shadow scoring process (``worker_process.ShadowSupervisor``), never in the
    node's: the shadow decodes the same images from outside and runs another model, and a
    crash there must cost the shadow one exam, not the node its listeners. ``on_exam`` is told
    the result id being scored (0 when none), so that the supervisor can record a death.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store_root: Path,
        on_exam: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store_root = store_root
        self.on_exam = on_exam
        self._loaded: tuple[str, Any] | None = None

    def scorer(self, path: Path, sha: str) -> Any:
        """The shadow bundle's scorer, loaded once per bundle (raises ModelError)."""
        if self._loaded is None or self._loaded[0] != sha:
            from mammo_node.ml.bundle import load_bundle
            from mammo_node.ml.inference import EnsembleScorer

            self._loaded = None  # the old model goes before the new one loads
            bundle = load_bundle(path, device="cpu")
            self._loaded = (
                sha,
                EnsembleScorer(
                    bundle, device=self.settings.device, precision=self.settings.precision
                ),
            )
        return self._loaded[1]

    def run_once(self, shadow: tuple[Path, str]) -> bool:
        """Score one exam with the shadow bundle ``(path, sha)``; returns whether there was one.
        An exam whose scoring raises is recorded as failed for this bundle and skipped."""
        path, sha = shadow
        scorer = self.scorer(path, sha)
        work = next_shadow_work(self.db, sha)
        if work is None:
            return False
        if self.on_exam is not None:
            self.on_exam(work.result_id)
        try:
            with self.db.read() as session:
                paths = {
                    i.sop_instance_uid: i.rel_path
                    for i in session.scalars(
                        select(Instance).where(
                            Instance.sop_instance_uid.in_(list(work.images)),
                            Instance.pruned_at.is_(None),
                        )
                    )
                }
            try:
                datasets = {
                    Slot.parse(work.images[uid]): dcmread(self.store_root / rel)
                    for uid, rel in paths.items()
                }
                inference = scorer.score_exam(datasets, work.study_uid)
            except DatabaseError:
                raise
            except Exception as exc:  # this exam only: recorded, and the shadow goes on
                from mammo_node.scrub import describe

                why = describe(exc)
                logger.warning("shadow scoring of exam %d failed: %s", work.exam_id, why)
                record_shadow_failure(self.db, work.result_id, sha, why)
                return True
            self._record(work, sha, inference)
        finally:
            if self.on_exam is not None:
                self.on_exam(0)
        return True

    def _record(self, work: ShadowWork, sha: str, inference: ExamInference) -> None:
        summary = ScoredExam.of(inference).to_json()
        try:
            with self.db.session() as session:
                session.add(
                    ShadowResult(
                        exam_fk=work.exam_id,
                        exam_revision=work.revision,
                        active_result_fk=work.result_id,
                        bundle_sha256=sha,
                        breast_scores=summary["breast_scores"],
                        images=summary["images"],
                        verdicts=summary["verdicts"],
                        timings=summary["timings"],
                        model_name=inference.bundle.name,
                        model_version=inference.bundle.version,
                        exam_score=inference.scores.exam_score,
                    )
                )
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            logger.info("exam %d already scored in shadow by another node", work.exam_id)


# --- comparison -----------------------------------------------------------------------------
def compare(db: Database, limit: int = 500) -> list[dict[str, Any]]:
    """Shadow scores beside the active ones, newest first (a failed one has no score and
    says why in ``failure``)."""
    with db.read() as session:
        rows = session.execute(
            select(ShadowResult, Result, Exam.study_uid)
            .join(Result, ShadowResult.active_result_fk == Result.id)
            .join(Exam, ShadowResult.exam_fk == Exam.id)
            .order_by(ShadowResult.id.desc())
            .limit(limit)
        ).all()
        return [
            {
                "study_uid": study_uid,
                "exam_revision": shadow.exam_revision,
                "active": {
                    "model": f"{active.model_name} {active.model_version}",
                    "bundle_sha256": active.bundle_sha256,
                    "exam_score": active.exam_score,
                    "verdicts": active.verdicts,
                },
                "shadow": {
                    "model": f"{shadow.model_name} {shadow.model_version}",
                    "bundle_sha256": shadow.bundle_sha256,
                    "exam_score": shadow.exam_score,
                    "verdicts": shadow.verdicts,
                    "failure": shadow.failure,
                },
                "scored_at": shadow.created_at.isoformat(),
            }
            for shadow, active, study_uid in rows
        ]
