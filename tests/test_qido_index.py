"""QIDO-RS, the worklist and the exam page on a (small) bulk archive, SQLite and PostgreSQL:
answers right for every filter, read from columns (the ingested files are deleted before the
searches), and every statement served by an index (EXPLAIN QUERY PLAN / EXPLAIN).

The archive: 300 bulk exams (mammo_node.synth.bulk: rows only, no files) and one 4-view exam
filed through the Ingestor with Study ID, Referring Physician, timezone and PPS start set.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from mammo_node.config import Settings
from mammo_node.db.models import Exam, Instance, Series
from mammo_node.db.session import Database, alembic_config, upgrade
from mammo_node.filing.ingest import Ingestor
from mammo_node.filing.storage import InstanceStore
from mammo_node.synth.bulk import BulkExam, bulk_exam, insert_index_rows
from mammo_node.web.dicomjson import HeaderCache
from mammo_node.web.qido import INSTANCE, SERIES, STUDY, Searcher, parse_query
from mammo_node.web.worklist import exam_view, worklist
from tests.helpers.environment import PG_ADMIN_URL, pg_database
from tests.helpers.mg import four_view_exam
from tests.helpers.site import file_dataset

BULK = 300
MIGRATION = Path(__file__).parents[1] / "alembic" / "versions" / "0009_indexed_search.py"
TABLES = ("patients", "exams", "series", "instances", "results")


@dataclass
class Archive:
    db: Database
    store: InstanceStore
    exams: list[BulkExam]
    filed_study: str
    filed_sops: list[str]

    def searcher(self) -> Searcher:
        return Searcher(self.db.dialect, HeaderCache(self.store))

    def search(self, level: str, **params: Any) -> tuple[list[dict[str, Any]], bool]:
        pairs = [(k, str(v)) for k, v in params.items()]
        with self.db.read() as session:
            found = self.searcher().search(session, parse_query(pairs, level), "http://node")
        return found.datasets, found.more


def _filed_exam(ingestor: Ingestor) -> tuple[str, list[str]]:
    datasets = four_view_exam(
        patient_id="FILED-1",
        PatientName="Filed^Woman",
        StudyDate="20250615",
        AccessionNumber="FILED-ACC",
        StudyID="S-77",
        ReferringPhysicianName="Referrer^Bea",
        TimezoneOffsetFromUTC="+0100",
        PerformedProcedureStepStartDate="20250615",
        PerformedProcedureStepStartTime="101500",
        PatientOrientation=["A", "R"],
    )
    for ds in datasets:
        file_dataset(ingestor, ds)
    return str(datasets[0].StudyInstanceUID), [str(ds.SOPInstanceUID) for ds in datasets]


def _build(data_dir: Path, url: str) -> Archive:
    settings = Settings(data_dir=data_dir, db_url=url, min_free_disk_mb=0)
    upgrade(settings.database_url, storage_dir=settings.storage_dir)
    db = Database(settings.database_url)
    store = InstanceStore(settings.storage_dir)
    insert_index_rows(db, first=0, count=BULK)
    study, sops = _filed_exam(Ingestor(settings, db, store))
    # the answers come from columns: no file is there to read a header from
    for path in settings.storage_dir.rglob("*.dcm"):
        path.unlink()
    return Archive(db, store, [bulk_exam(n) for n in range(BULK)], study, sops)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    data_dir = tmp_path_factory.mktemp(f"qido-{request.param}")
    if request.param == "sqlite":
        built = _build(data_dir, f"sqlite:///{data_dir / 'node.db'}")
        yield built
        built.db.dispose()
        return
    request.getfixturevalue("pg_server")
    databases = pg_database(PG_ADMIN_URL)
    built = _build(data_dir, next(databases))
    try:
        yield built
    finally:
        built.db.dispose()
        databases.close()


def value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value") or [None]
    return values[0]


def studies(archive: Archive, **params: Any) -> list[str]:
    return [value(d, "0020000D") for d in archive.search(STUDY, **params)[0]]


def uids(exams: list[BulkExam]) -> list[str]:
    return [e.study_uid for e in exams]  # bulk exams are numbered in id order


# --- answers ----------------------------------------------------------------------------------
def test_qido_filters_match_patient_date_accession_and_names(archive: Archive) -> None:
    exams = archive.exams
    assert studies(archive, PatientID=exams[7].patient_id) == [exams[7].study_uid]
    assert studies(archive, PatientID=exams[7].patient_id.lower()) == []  # LO: case-sensitive
    assert studies(archive, PatientID="BULK000001*") == uids(exams[10:20])
    assert studies(archive, PatientID="BULK00000?5") == uids(exams[5:100:10])
    assert studies(archive, AccessionNumber=exams[123].accession_number) == [exams[123].study_uid]
    assert studies(archive, AccessionNumber="FILED-ACC") == [archive.filed_study]

    # dates: exam n was on 2023-01-01 + n days
    assert studies(archive, StudyDate="20230201-20230210") == uids(exams[31:41])
    assert studies(archive, StudyDate="-20230105") == uids(exams[:5])
    assert studies(archive, StudyDate="20231020-") == [*uids(exams[292:]), archive.filed_study]
    assert studies(archive, StudyDate="20230301") == [exams[59].study_uid]
    assert studies(archive, StudyDate="20230201-20230210", PatientID="BULK000003*") == uids(
        exams[31:40]
    )

    # names: case-insensitive, wildcards anywhere
    assert studies(archive, PatientName="bulk^patient000002?") == uids(exams[20:30])
    assert studies(archive, PatientName="BULK^Patient0000033") == [exams[33].study_uid]
    assert studies(archive, PatientName="*patient00000?7") == uids(exams[7:100:10])
    assert studies(archive, PatientName="filed^*") == [archive.filed_study]

    assert studies(archive, StudyInstanceUID=f"{exams[3].study_uid},{exams[4].study_uid}") == (
        uids(exams[3:5])
    )
    assert studies(archive, ModalitiesInStudy="MG", PatientID=exams[9].patient_id) == [
        exams[9].study_uid
    ]
    assert studies(archive, ModalitiesInStudy="SR") == []


def test_qido_limit_and_offset_page_through_every_match_once(archive: Archive) -> None:
    seen: list[str] = []
    for offset in range(0, BULK, 70):
        page, more = archive.search(STUDY, PatientID="BULK*", limit=70, offset=offset)
        assert len(page) == min(70, BULK - offset)
        assert more == (offset + 70 < BULK)
        seen += [value(d, "0020000D") for d in page]
    assert seen == uids(archive.exams)
    assert archive.search(STUDY, PatientID="BULK*", limit=5, offset=BULK)[0] == []


def test_qido_returns_the_default_attributes_from_columns(archive: Archive) -> None:
    bulk = archive.exams[42]
    (study,), _ = archive.search(STUDY, AccessionNumber=bulk.accession_number)
    assert value(study, "00100020") == bulk.patient_id
    assert value(study, "00100010") == {"Alphabetic": bulk.patient_name}
    assert value(study, "00080020") == bulk.study_date
    assert study["00080061"]["Value"] == ["MG"]
    assert value(study, "00201206") == 4 and value(study, "00201208") == 4
    assert value(study, "00200010") == "42"

    # the filed exam: attributes read from its headers at ingest, answered with no file there
    (study,), _ = archive.search(STUDY, PatientID="FILED-1")
    assert value(study, "00200010") == "S-77"
    assert value(study, "00080090") == {"Alphabetic": "Referrer^Bea"}
    assert value(study, "00080201") == "+0100"
    assert value(study, "00201208") == 4
    series, _ = archive.search(SERIES, StudyInstanceUID=archive.filed_study)
    assert len(series) == 4
    assert {value(s, "00400244") for s in series} == {"20250615"}
    assert {value(s, "00400245") for s in series} == {"101500"}
    assert {value(s, "00201209") for s in series} == {1}
    (instance,), _ = archive.search(INSTANCE, SOPInstanceUID=archive.filed_sops[2])
    assert value(instance, "00280100") == 16
    assert (value(instance, "00280010"), value(instance, "00280011")) == (64, 48)
    assert value(instance, "00100020") == "FILED-1"
    instances, _ = archive.search(INSTANCE, PatientID=bulk.patient_id)
    assert sorted(value(i, "00080018") for i in instances) == sorted(
        bulk.sop_uid(s) for s in ("L-CC", "L-MLO", "R-CC", "R-MLO")
    )
    mg, _ = archive.search(SERIES, Modality="MG", PatientID=bulk.patient_id)
    assert len(mg) == 4


def test_includefield_beyond_the_index_still_reads_the_header(archive: Archive) -> None:
    """The one case QIDO reads a file: an attribute the index does not hold; the filed
    exam's files were deleted, so the search says so instead of answering from nowhere."""
    from mammo_node.errors import StorageError

    with pytest.raises(StorageError):
        archive.search(STUDY, PatientID="FILED-1", includefield="Manufacturer")


# --- query plans ------------------------------------------------------------------------------
@contextmanager
def statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements (with their parameters) run on ``db`` inside the block."""
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    engines = {id(e): e for e in (db.engine, db.read_engine)}.values()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", grab)


def full_scans(
    db: Database,
    statement: str,
    parameters: Any,
    allowed: tuple[str, ...],
    pg_off: tuple[str, ...] = (),
) -> list[str]:
    """The plan's steps that read a whole table (or a whole index without a condition);
    ``pg_off``: PostgreSQL plan types priced out besides sequential scans."""
    with db.read_engine.connect() as conn:
        if db.dialect == "sqlite":
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            steps = [str(row[3]) for row in plan]
            return [
                s
                for s in steps
                if re.match(rf"SCAN ({'|'.join(TABLES)})\b", s) and not any(a in s for a in allowed)
            ]
        # a small table is read sequentially whatever its indexes; with sequential scans
        # priced out, one still chosen means no index serves the condition
        for setting in ("seqscan", *pg_off):
            conn.exec_driver_sql(f"SET LOCAL enable_{setting} = off")
        (plan,) = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).one()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        bad: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            relation = node.get("Relation Name")
            kind = node.get("Node Type", "")
            whole = kind == "Seq Scan" or (
                kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node
            )
            exempt = any(a in node.get("Index Name", "") for a in allowed)
            if relation in TABLES and whole and not exempt:
                bad.append(f"{kind} on {relation} {node.get('Index Name', '')}".strip())
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return bad


FILTERS: list[tuple[str, dict[str, str]]] = [
    (STUDY, {"PatientID": "BULK0000007"}),
    (STUDY, {"PatientID": "BULK000001*"}),
    (STUDY, {"PatientID": "BULK0000007", "IssuerOfPatientID": ""}),
    (STUDY, {"StudyDate": "20230201-20230228", "limit": "25"}),
    (STUDY, {"StudyDate": "20230301"}),
    (STUDY, {"AccessionNumber": "A000000009"}),
    (STUDY, {"AccessionNumber": "A00000001*"}),
    (STUDY, {"PatientName": "bulk^patient000001*"}),
    (STUDY, {"PatientName": "BULK^PATIENT0000012"}),
    (STUDY, {"StudyDescription": "SCREENING*"}),
    (STUDY, {"ModalitiesInStudy": "SR"}),
    (STUDY, {"StudyInstanceUID": bulk_exam(3).study_uid}),
    (SERIES, {"SeriesInstanceUID": bulk_exam(3).series_uid("L-CC")}),
    (SERIES, {"Modality": "SR"}),
    (SERIES, {"StudyInstanceUID": bulk_exam(3).study_uid}),
    (INSTANCE, {"SOPInstanceUID": bulk_exam(3).sop_uid("R-MLO")}),
    (INSTANCE, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.33"}),
    (INSTANCE, {"PatientID": "BULK0000007"}),
]


@pytest.mark.parametrize(("level", "params"), FILTERS, ids=lambda v: str(v))
def test_every_qido_filter_is_served_by_an_index(
    archive: Archive, level: str, params: dict[str, str]
) -> None:
    with statements(archive.db) as seen:
        archive.search(level, **params)
    assert seen
    for statement, parameters in seen:
        assert full_scans(archive.db, statement, parameters, ()) == [], statement


def test_worklist_and_exam_page_read_through_indexes_in_a_fixed_number_of_queries(
    archive: Archive,
) -> None:
    with statements(archive.db) as few:
        assert len(worklist(archive.db, limit=5)) == 5
    with statements(archive.db) as many:
        rows = worklist(archive.db, limit=200)
    assert len(rows) == 200 and all(r.result is not None for r in rows[1:])
    assert rows[0].study_uid == archive.filed_study  # newest first; it has no result
    assert rows[1].study_uid == archive.exams[-1].study_uid
    assert len(many) == len(few)  # no query per listed exam
    # the newest page walks the received-time index and stops at the page's end (PostgreSQL
    # would rather sort a table this small: with sorting and whole-table joins priced out it
    # must show that the index serves the order; the bench shows the plan at full size)
    for statement, parameters in many:
        assert (
            full_scans(
                archive.db,
                statement,
                parameters,
                ("ix_exams_last_received_at",),
                ("sort", "mergejoin", "hashjoin"),
            )
            == []
        ), statement

    headers = HeaderCache(archive.store)
    with statements(archive.db) as page:
        view = exam_view(archive.db, headers, archive.exams[11].study_uid)
    assert [c.sop_instance_uid for c in view.views] == [
        archive.exams[11].sop_uid(s) for s in ("R-CC", "L-CC", "R-MLO", "L-MLO")
    ]
    assert view.result is not None
    for statement, parameters in page:
        assert full_scans(archive.db, statement, parameters, ()) == [], statement
    filed = exam_view(archive.db, headers, archive.filed_study)  # its files are gone
    assert all(c.sop_instance_uid in archive.filed_sops for c in filed.views)


TRIAGE_INDEXES = ("ix_exams_triage", "ix_exams_state_triage", "ix_exams_last_received_at")


def _latest(archive: Archive) -> dict[str, tuple[float, int | None]]:
    """Each exam's latest result (exam score, category), the way the worklist shows it."""
    from mammo_node.db.models import Result

    with archive.db.read() as session:
        latest = select(Result.exam_fk, func.max(Result.id).label("id")).group_by(Result.exam_fk)
        rows = session.execute(
            select(Exam.study_uid, Result.exam_score, Result.category)
            .join(Result, Result.exam_fk == Exam.id)
            .where(Result.id.in_(select(latest.subquery().c.id)))
        ).all()
    return {study: (score, category) for study, score, category in rows}


@pytest.mark.parametrize("state", ["", "scored"])
def test_worklist_triage_orders_walk_an_index_and_stop_at_the_page(
    archive: Archive, state: str
) -> None:
    latest = _latest(archive)
    by_risk = sorted(latest, key=lambda s: -latest[s][0])
    with statements(archive.db) as seen:
        risk = worklist(archive.db, sort="risk", limit=40, state=state or None)
        category = worklist(archive.db, sort="category", limit=40, state=state or None)
        top = worklist(archive.db, min_category=8, limit=400, state=state or None)
        newest_top = worklist(archive.db, sort="newest", min_category=8, limit=400)
        # few exams that high: read by category, ordered in Python; many: the order's index
        rare = worklist(archive.db, sort="risk", min_category=8, limit=40)
        common = worklist(archive.db, sort="risk", min_category=2, limit=40)
    assert [r.study_uid for r in risk] == by_risk[:40]
    keyed = [(latest[r.study_uid][1], latest[r.study_uid][0]) for r in category]
    assert keyed == sorted(keyed, reverse=True) and len(keyed) == 40
    assert keyed[0] == max((c, v) for v, c in latest.values())
    wanted = {s for s, (_, c) in latest.items() if c is not None and c >= 8}
    assert wanted and {r.study_uid for r in top} == wanted
    assert {r.study_uid for r in newest_top} == wanted
    received = [r.last_received_at for r in newest_top]
    assert received == sorted(received, reverse=True)  # sort=newest stays newest
    for rows, at_least in ((rare, 8), (common, 2)):
        expected = [s for s in by_risk if (latest[s][1] or 0) >= at_least][:40]
        assert [r.study_uid for r in rows] == expected
    assert len(wanted) <= 5 * 40 < len([c for _, c in latest.values() if (c or 0) >= 2])
    for statement, parameters in seen:
        assert (
            full_scans(
                archive.db, statement, parameters, TRIAGE_INDEXES, ("sort", "mergejoin", "hashjoin")
            )
            == []
        ), statement
    if not state:  # the exam without a result comes after every scored one
        everything = worklist(archive.db, sort="risk", limit=BULK + 5)
        assert everything[-1].study_uid == archive.filed_study
        assert [r.study_uid for r in everything[:-1]] == by_risk


# --- migration ---------------------------------------------------------------------------------
def _as_before_0009(db: Database) -> None:
    """The schema of revision 0008 with the rows kept (a downgrade would recreate SQLite
    tables, which their foreign keys refuse while rows refer to them)."""
    from alembic import command

    spec = importlib.util.spec_from_file_location("m0009", MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    command.downgrade(alembic_config(db.url), "0009")  # the later revisions first
    command.stamp(alembic_config(db.url), "0008")
    added = {
        "exams": ("patient_name_folded", "study_id", "referring_physician_name", "timezone_offset"),
        "series": ("pps_start_date", "pps_start_time"),
        "instances": ("bits_allocated", "number_of_frames", "patient_orientation"),
    }
    with db.engine.begin() as conn:
        for name, _, _, _ in migration.INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        for table, columns in added.items():
            for column in columns:
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")


def test_migration_0009_backfills_from_rows_and_stored_headers(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, db_url=db_url, min_free_disk_mb=0)
    upgrade(db_url)
    db = Database(db_url)
    try:
        study, _ = _filed_exam(Ingestor(settings, db, InstanceStore(settings.storage_dir)))
        _as_before_0009(db)
        with db.engine.begin() as conn:  # a name only the Python fold handles (not SQL lower)
            conn.execute(text("UPDATE exams SET patient_name = 'Ørsted^Åse'"))
        upgrade(db_url, storage_dir=settings.storage_dir)
        with db.read() as session:
            exam = session.scalars(select(Exam).where(Exam.study_uid == study)).one()
            assert exam.patient_name_folded == "ørsted^åse"
            assert (exam.study_id, exam.referring_physician_name, exam.timezone_offset) == (
                "S-77",
                "Referrer^Bea",
                "+0100",
            )
            pps = session.execute(select(Series.pps_start_date, Series.pps_start_time)).all()
            assert set(pps) == {("20250615", "101500")}
            filled = session.execute(
                select(Instance.bits_allocated, Instance.patient_orientation)
            ).all()
            assert set(filled) == {(16, "A\\R")}
        # without the store the header columns stay NULL: QIDO then reads the header
        _as_before_0009(db)
        upgrade(db_url)
        with db.read() as session:
            assert session.scalar(select(Exam.study_id)) is None
            searcher = Searcher(db.dialect, HeaderCache(InstanceStore(settings.storage_dir)))
            found = searcher.search(session, parse_query([], STUDY), "http://node")
        assert value(found.datasets[0], "00200010") == "S-77"
    finally:
        db.dispose()


def test_state_counts_follow_every_change_without_counting_each_page(db_url: str) -> None:
    from mammo_node.db import repo
    from mammo_node.domain import ExamState
    from mammo_node.web.worklist import state_counts

    upgrade(db_url)
    db = Database(db_url)
    try:
        insert_index_rows(db, first=0, count=20)
        assert state_counts(db)["scored"] == 20
        with statements(db) as seen:
            assert state_counts(db)["scored"] == 20
        assert not any("GROUP BY" in s.upper() for s, _ in seen)  # nothing changed: no count
        for s, p in seen:
            assert full_scans(db, s, p, ()) == [], s
        with db.session() as session:
            exam = repo.exam_by_uid(session, bulk_exam(3).study_uid)
            assert exam is not None
            repo.set_exam_state(session, exam, ExamState.READY, "rescore asked")
        counts = state_counts(db)
        assert (counts["scored"], counts["ready"]) == (19, 1)
        insert_index_rows(db, first=20, count=2)  # new exams, no event
        assert state_counts(db)["scored"] == 21
    finally:
        db.dispose()
