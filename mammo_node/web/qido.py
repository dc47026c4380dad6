"""QIDO-RS (PS3.18 10.6): search studies, series and instances in the index.

Matching (PS3.4 C.2.2.2) on the indexed attributes: single value, UID lists (``a,b`` or
``a\\b``), wildcards ``*`` and ``?`` (names case-insensitive, other values case-sensitive),
date and time ranges (``20240101-20241231``, ``-20241231``, ``20240101-``), empty value =
universal. ``includefield`` (keywords or tags, comma-separated, repeatable, or ``all``),
``limit`` / ``offset``. ``fuzzymatching`` is accepted and ignored (a Warning says so); so is a
known attribute that is not indexed.

Every attribute matched on has an index (``mammo_node.db.models``: PatientID with its issuer,
the case-folded PatientName, StudyDate, AccessionNumber, StudyDescription, Modality, the
UIDs), and every attribute returned by default is a column, so an answer costs index lookups
and no file reads. Only ``includefield`` attributes the index does not hold are read from a
stored header (cached), as are the defaults of a row filed before revision 0009 whose file
was not there when the migration ran (their columns are NULL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from mammo_node.db.models import Exam, Instance, Patient, Series, fold_name
from mammo_node.web.dicomjson import HeaderCache, JsonDataset, tag_key
from mammo_node.web.errors import DicomWebError

STUDY, SERIES, INSTANCE = "study", "series", "instance"
LEVELS = (STUDY, SERIES, INSTANCE)
MAX_LIMIT = 1000
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: str  # the lowest level at which the index holds it
    column: Any  # ORM column, or None for derived attributes
    vr: str

    @property
    def tag(self) -> int:
        tag = tag_for_keyword(self.keyword)
        assert tag is not None
        return int(tag)


INDEXED: dict[str, Attribute] = {
    a.keyword: a
    for a in (
        Attribute("StudyInstanceUID", STUDY, Exam.study_uid, "UI"),
        Attribute("StudyDate", STUDY, Exam.study_date, "DA"),
        Attribute("StudyTime", STUDY, Exam.study_time, "TM"),
        Attribute("AccessionNumber", STUDY, Exam.accession_number, "SH"),
        Attribute("StudyDescription", STUDY, Exam.study_description, "LO"),
        Attribute("PatientName", STUDY, Exam.patient_name_folded, "PN"),
        Attribute("PatientID", STUDY, Patient.patient_id, "LO"),
        Attribute("IssuerOfPatientID", STUDY, Patient.issuer, "LO"),
        Attribute("PatientBirthDate", STUDY, Exam.patient_birth_date, "DA"),
        Attribute("PatientSex", STUDY, Exam.patient_sex, "CS"),
        Attribute("ModalitiesInStudy", STUDY, None, "CS"),
        Attribute("SeriesInstanceUID", SERIES, Series.series_uid, "UI"),
        Attribute("Modality", SERIES, Series.modality, "CS"),
        Attribute("SeriesNumber", SERIES, Series.series_number, "IS"),
        Attribute("SeriesDescription", SERIES, Series.series_description, "LO"),
        Attribute("SOPInstanceUID", INSTANCE, Instance.sop_instance_uid, "UI"),
        Attribute("SOPClassUID", INSTANCE, Instance.sop_class_uid, "UI"),
        Attribute("InstanceNumber", INSTANCE, Instance.instance_number, "IS"),
    )
}
# returned at each level (PS3.18 Tables 10.6.3-3 .. -5) from columns besides the matching
# keys; read from a stored header only where the column is NULL (see the module's doc)
DEFAULTS: dict[str, tuple[str, ...]] = {
    STUDY: ("StudyID", "ReferringPhysicianName", "TimezoneOffsetFromUTC"),
    SERIES: ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
    INSTANCE: ("BitsAllocated", "NumberOfFrames", "TimezoneOffsetFromUTC"),
}
# what includefield=all adds at the study and series levels (a header holds every level)
ALL_FIELDS: dict[str, tuple[str, ...]] = {
    STUDY: (
        "SpecificCharacterSet",
        "StudyID",
        "ReferringPhysicianName",
        "StudyDescription",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "OtherPatientIDsSequence",
        "PatientComments",
        "AdmittingDiagnosesDescription",
        "NameOfPhysiciansReadingStudy",
        "ProcedureCodeSequence",
        "IssuerOfAccessionNumberSequence",
        "InstitutionName",
        "TimezoneOffsetFromUTC",
    ),
    SERIES: (
        "BodyPartExamined",
        "Laterality",
        "ProtocolName",
        "OperatorsName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
        "SeriesDate",
        "SeriesTime",
        "Manufacturer",
        "ManufacturerModelName",
        "StationName",
    ),
}
LEVEL_OF = {STUDY: 0, SERIES: 1, INSTANCE: 2}


@dataclass
class Query:
    level: str
    study_uid: str | None = None
    series_uid: str | None = None
    matches: list[tuple[Attribute, str]] = field(default_factory=list)
    include: list[int] = field(default_factory=list)
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    limit_given: bool = False
    warnings: list[str] = field(default_factory=list)


def _tag_of(name: str) -> int:
    """A keyword (PatientName) or tag (00100010) as a tag number; 400 if neither."""
    name = name.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise DicomWebError(
            400, f"query parameter {name!r} is neither a DICOM keyword nor a tag (ggggeeee)"
        )
    return int(tag)


def _int_param(name: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DicomWebError(400, f"{name}={value!r} is not an integer") from None
    if number < low:
        raise DicomWebError(400, f"{name}={value} should be >= {low}")
    return number


def parse_query(
    params: Sequence[tuple[str, str]],
    level: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Query:
    query = Query(level, study_uid, series_uid)
    for name, value in params:
        lowered = name.lower()
        if lowered == "limit":
            query.limit = min(_int_param(name, value, 0), MAX_LIMIT)
            query.limit_given = True
        elif lowered == "offset":
            query.offset = _int_param(name, value, 0)
        elif lowered == "includefield":
            for item in (v for v in value.split(",") if v.strip()):
                if item.strip().lower() == "all":
                    query.include_all = True
                else:
                    query.include.append(_tag_of(item))
        elif lowered == "fuzzymatching":
            if value.strip().lower() == "true":
                query.warnings.append("fuzzymatching is not supported; exact matching was used")
        elif lowered == "orderby":
            query.warnings.append("orderby is not supported; results are in index order")
        else:
            _add_match(query, name, value)
    return query


def _add_match(query: Query, name: str, value: str) -> None:
    if "." in name:
        query.warnings.append(f"sequence matching ({name}) is not supported and was ignored")
        return
    tag = _tag_of(name)
    keyword = keyword_for_tag(tag)
    attribute = INDEXED.get(keyword)
    if attribute is None or LEVEL_OF[attribute.level] > LEVEL_OF[query.level]:
        query.warnings.append(
            f"{keyword or name} is not supported for matching at the {query.level} level "
            "and was ignored"
        )
        return
    if value == "":
        query.include.append(tag)  # universal matching: return the attribute
        return
    _check_value(attribute, value)
    query.matches.append((attribute, value))


def _check_value(attribute: Attribute, value: str) -> None:
    if attribute.vr in ("DA", "TM"):
        pattern = _DATE if attribute.vr == "DA" else _TIME
        low, dash, high = value.partition("-")
        for part in (low, high) if dash else (low,):
            if part and not pattern.match(part):
                raise DicomWebError(
                    400,
                    f"{attribute.keyword}={value!r}: expected "
                    f"{'YYYYMMDD' if attribute.vr == 'DA' else 'HHMMSS'} or a range a-b",
                )
        if dash and not low and not high:
            raise DicomWebError(400, f"{attribute.keyword}={value!r}: empty range")
    if attribute.vr == "IS" and not re.fullmatch(r"[+-]?\d+", value.strip()):
        raise DicomWebError(400, f"{attribute.keyword}={value!r} is not an integer")


# --- SQL --------------------------------------------------------------------------------------
def _wildcard(column: Any, value: str, *, dialect: str) -> ColumnElement[bool]:
    """Case-sensitive ``*`` / ``?`` matching that an index serves for a literal prefix."""
    if dialect == "sqlite":  # GLOB: case-sensitive, * and ? as DICOM means them, BINARY index
        return column.op("GLOB")(value.replace("[", "[[]"))
    # PostgreSQL's LIKE escapes with a backslash by default; the pattern_ops index serves it
    pattern = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(pattern.replace("*", "%").replace("?", "_"))


def _condition(attribute: Attribute, value: str, dialect: str) -> ColumnElement[bool]:
    column = attribute.column
    if attribute.keyword == "ModalitiesInStudy":  # the series of those modalities, by index
        wanted = [v.strip() for v in re.split(r"[\\,]", value) if v.strip()]
        return Exam.id.in_(select(Series.exam_fk).where(Series.modality.in_(wanted)))
    if attribute.vr == "UI":
        uids = [v.strip() for v in re.split(r"[\\,]", value) if v.strip()]
        return column.in_(uids)
    if attribute.vr in ("DA", "TM") and "-" in value:
        low, _, high = value.partition("-")
        clauses = [column != ""]
        if low:
            clauses.append(column >= low)
        if high:
            # a time range's upper bound includes its fractions: 1015 covers 101559.99
            clauses.append(column <= (high if attribute.vr == "DA" else high + "\x7f"))
        return and_(*clauses)
    if attribute.vr == "IS":
        return column == int(value)
    if attribute.vr == "CS" and "\\" in value:
        return column.in_([v for v in value.split("\\") if v])
    if attribute.vr == "PN":  # matched on the column folded at ingest
        value = fold_name(value)
    if "*" in value or "?" in value:
        return _wildcard(column, value, dialect=dialect)
    return column == value


def _filtered(statement: Select[Any], query: Query, dialect: str) -> Select[Any]:
    if query.study_uid:
        statement = statement.where(Exam.study_uid == query.study_uid)
    if query.series_uid:
        statement = statement.where(Series.series_uid == query.series_uid)
    conditions = [_condition(a, v, dialect) for a, v in query.matches]
    return statement.where(*conditions) if conditions else statement


# --- answers ----------------------------------------------------------------------------------
def element(vr: str, value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {"vr": vr}
    if vr == "PN":
        groups = str(value).split("=")
        names = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))
        return {"vr": vr, "Value": [{k: v for k, v in names.items() if v}]}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return {"vr": vr, "Value": [int(value)]}
    if isinstance(value, list):
        return {"vr": vr, "Value": value} if value else {"vr": vr}
    return {"vr": vr, "Value": [value]}


def _column_value(vr: str, value: Any) -> dict[str, Any] | None:
    """A default attribute from its column; None (NULL: not read yet) leaves it to a header."""
    return None if value is None else element(vr, value)


@dataclass
class Found:
    """One answer row before it becomes JSON: indexed values, and where a header is read
    if one is needed: ``rel_path`` (an instance) or the exam / series ``owner`` id."""

    values: dict[str, dict[str, Any]]
    rel_path: str | None = None
    owner: int | None = None


@dataclass
class SearchResult:
    datasets: list[JsonDataset]
    more: bool
    warnings: list[str]


class Searcher:
    def __init__(self, dialect: str, headers: HeaderCache) -> None:
        self.dialect = dialect
        self.headers = headers

    def search(self, session: Session, query: Query, base_url: str) -> SearchResult:
        run: dict[str, Callable[[Session, Query, str], list[Found]]] = {
            STUDY: self._studies,
            SERIES: self._series,
            INSTANCE: self._instances,
        }
        found = run[query.level](session, query, base_url)
        more = len(found) > query.limit
        found = found[: query.limit]
        warnings = list(query.warnings)
        if more and not query.limit_given:
            warnings.append(
                f"The number of results exceeded the maximum supported by the server "
                f"({MAX_LIMIT}). Additional results can be requested."
            )
        elif more:
            warnings.append("There are additional results that can be requested.")
        wanted = self._wanted(query)
        self._locate_headers(session, query, [f for f in found if self._needs_header(f, wanted)])
        return SearchResult([self._finish(f, query, wanted) for f in found], more, warnings)

    def _page(
        self, statement: Select[Any], key: Any, query: Query, ids: Select[Any] | None = None
    ) -> Select[Any]:
        """The page: first its ids, matched, sorted and skipped on index entries alone (a
        month of StudyDate is thousands of exams), then only those rows with their joins.
        ``ids``: the id query's joins when fewer than the statement's are needed."""
        ids = (
            _filtered(
                ids if ids is not None else statement.with_only_columns(key), query, self.dialect
            )
            .order_by(key)
            .offset(query.offset)
            .limit(query.limit + 1)
        )
        return statement.where(key.in_(ids)).order_by(key)

    @staticmethod
    def _wanted(query: Query) -> list[str]:
        tags = [tag_for_keyword(k) for k in DEFAULTS[query.level]]
        tags += query.include
        if query.include_all and query.level in ALL_FIELDS:
            tags += [tag_for_keyword(k) for k in ALL_FIELDS[query.level]]
        return [tag_key(int(t)) for t in tags if t is not None]

    @staticmethod
    def _needs_header(found: Found, wanted: list[str]) -> bool:
        return any(key not in found.values for key in wanted)

    def _locate_headers(self, session: Session, query: Query, found: list[Found]) -> None:
        """The first-filed instance of each exam / series whose answer needs a header."""
        owners = [f.owner for f in found if f.rel_path is None and f.owner is not None]
        if not owners:
            return
        column = Instance.exam_fk if query.level == STUDY else Instance.series_fk
        paths = _first_instance(session, column, owners)
        for item in found:
            if item.rel_path is None and item.owner is not None:
                item.rel_path = paths.get(item.owner)

    def _finish(self, found: Found, query: Query, wanted: list[str]) -> JsonDataset:
        out = dict(found.values)
        everything = query.include_all and query.level == INSTANCE
        missing = [k for k in wanted if k not in out]
        if found.rel_path and (missing or everything):
            header = self.headers.get(found.rel_path)
            if everything:
                missing = [k for k in header if k not in out]
            for key in missing:
                value = header.get(key)
                if value is not None and "BulkDataURI" not in value:
                    out[key] = value
        return dict(sorted(out.items()))

    # --- per level ------------------------------------------------------------------------
    def _studies(self, session: Session, query: Query, base: str) -> list[Found]:
        statement = select(Exam, Patient).join(Patient, Exam.patient_fk == Patient.id)
        ids = select(Exam.id)
        if any(
            a.column is not None and a.column.table is Patient.__table__ for a, _ in query.matches
        ):
            ids = ids.join(Patient, Exam.patient_fk == Patient.id)
        rows = session.execute(self._page(statement, Exam.id, query, ids)).all()
        ids = [exam.id for exam, _ in rows]
        series_counts, modalities = _series_facts(session, ids)
        instance_counts = _count_by(session, Instance.exam_fk, ids)
        return [
            Found(
                {
                    **_study_values(exam, patient, base),
                    tag_key(0x00080061): element("CS", sorted(modalities.get(exam.id, ()))),
                    tag_key(0x00201206): element("IS", series_counts.get(exam.id, 0)),
                    tag_key(0x00201208): element("IS", instance_counts.get(exam.id, 0)),
                },
                owner=exam.id,
            )
            for exam, patient in rows
        ]

    def _series(self, session: Session, query: Query, base: str) -> list[Found]:
        statement = (
            select(Series, Exam, Patient)
            .join(Exam, Series.exam_fk == Exam.id)
            .join(Patient, Exam.patient_fk == Patient.id)
        )
        rows = session.execute(self._page(statement, Series.id, query)).all()
        ids = [series.id for series, _, _ in rows]
        counts = _count_by(session, Instance.series_fk, ids)
        found = []
        for series, exam, patient in rows:
            values = {} if query.study_uid else _study_values(exam, patient, base)
            values.update(_series_values(series, exam, base))
            values[tag_key(0x00201209)] = element("IS", counts.get(series.id, 0))
            found.append(Found(values, owner=series.id))
        return found

    def _instances(self, session: Session, query: Query, base: str) -> list[Found]:
        statement = (
            select(Instance, Series, Exam, Patient)
            .join(Series, Instance.series_fk == Series.id)
            .join(Exam, Instance.exam_fk == Exam.id)
            .join(Patient, Exam.patient_fk == Patient.id)
        )
        rows = session.execute(self._page(statement, Instance.id, query)).all()
        found = []
        for instance, series, exam, patient in rows:
            values = {} if query.study_uid else _study_values(exam, patient, base)
            if not query.series_uid:
                values.update(_series_values(series, exam, base))
            series_url = f"{base}/studies/{exam.study_uid}/series/{series.series_uid}"
            values.update(
                _present(
                    {
                        tag_key(0x00080016): element("UI", instance.sop_class_uid),
                        tag_key(0x00080018): element("UI", instance.sop_instance_uid),
                        tag_key(0x00080056): element("CS", "ONLINE"),
                        tag_key(0x00080201): _column_value("SH", exam.timezone_offset),
                        tag_key(0x00081190): element(
                            "UR", f"{series_url}/instances/{instance.sop_instance_uid}"
                        ),
                        tag_key(0x00200013): element("IS", instance.instance_number),
                        tag_key(0x00280008): element("IS", instance.number_of_frames),
                        tag_key(0x00280010): element("US", instance.rows),
                        tag_key(0x00280011): element("US", instance.columns),
                        tag_key(0x00280100): element("US", instance.bits_allocated),
                    }
                )
            )
            found.append(Found(values, rel_path=instance.rel_path))
        return found


def _present(values: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in values.items() if v is not None}


def _study_values(exam: Exam, patient: Patient, base: str) -> dict[str, dict[str, Any]]:
    return _present(
        {
            tag_key(0x00080020): element("DA", exam.study_date),
            tag_key(0x00080030): element("TM", exam.study_time),
            tag_key(0x00080050): element("SH", exam.accession_number),
            tag_key(0x00080056): element("CS", "ONLINE"),
            tag_key(0x00080090): _column_value("PN", exam.referring_physician_name),
            tag_key(0x00080201): _column_value("SH", exam.timezone_offset),
            tag_key(0x00081030): element("LO", exam.study_description),
            tag_key(0x00081190): element("UR", f"{base}/studies/{exam.study_uid}"),
            # the study's own attributes; the patient row only links studies by ID
            tag_key(0x00100010): element("PN", exam.patient_name),
            tag_key(0x00100020): element("LO", patient.patient_id),
            tag_key(0x00100021): element("LO", patient.issuer),
            tag_key(0x00100030): element("DA", exam.patient_birth_date),
            tag_key(0x00100040): element("CS", exam.patient_sex),
            tag_key(0x0020000D): element("UI", exam.study_uid),
            tag_key(0x00200010): _column_value("SH", exam.study_id),
        }
    )


def _series_values(series: Series, exam: Exam, base: str) -> dict[str, dict[str, Any]]:
    return _present(
        {
            tag_key(0x00080060): element("CS", series.modality),
            tag_key(0x0008103E): element("LO", series.series_description),
            tag_key(0x00081190): element(
                "UR", f"{base}/studies/{exam.study_uid}/series/{series.series_uid}"
            ),
            tag_key(0x0020000D): element("UI", exam.study_uid),
            tag_key(0x0020000E): element("UI", series.series_uid),
            tag_key(0x00200011): element("IS", series.series_number),
            tag_key(0x00400244): _column_value("DA", series.pps_start_date),
            tag_key(0x00400245): _column_value("TM", series.pps_start_time),
        }
    )


def _count_by(session: Session, column: Any, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(column, func.count()).where(column.in_(ids)).group_by(column)
    ).all()
    return {key: count for key, count in rows}


def _first_instance(session: Session, column: Any, ids: list[int]) -> dict[int, str]:
    """The first-filed instance's stored path per exam or series (where headers are read)."""
    if not ids:
        return {}
    first = (
        select(column.label("owner"), func.min(Instance.id).label("first_id"))
        .where(column.in_(ids))
        .group_by(column)
        .subquery()
    )
    rows = session.execute(
        select(first.c.owner, Instance.rel_path).join(Instance, Instance.id == first.c.first_id)
    ).all()
    return {owner: rel_path for owner, rel_path in rows}


def _series_facts(session: Session, ids: list[int]) -> tuple[dict[int, int], dict[int, set[str]]]:
    counts: dict[int, int] = {}
    modalities: dict[int, set[str]] = {}
    if not ids:
        return counts, modalities
    rows = session.execute(
        select(Series.exam_fk, Series.modality).where(Series.exam_fk.in_(ids))
    ).all()
    for exam_id, modality in rows:
        counts[exam_id] = counts.get(exam_id, 0) + 1
        if modality:
            modalities.setdefault(exam_id, set()).add(modality)
    return counts, modalities


def vr_of(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def or_all(clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(*clauses)
