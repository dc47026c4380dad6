"""DICOMweb, pages, API and operations routes against a real server on SQLite and PostgreSQL.

DICOMweb is exercised with dicomweb-client (a real client); everything else with httpx.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.uid import ComprehensiveSRStorage, RLELossless, generate_uid
from requests.exceptions import HTTPError
from sqlalchemy import select

from mammo_node.db.models import Instance
from mammo_node.domain import Slot
from mammo_node.observe import metrics
from mammo_node.observe.audit import iter_events
from mammo_node.synth import habits
from mammo_node.web.auth import hash_entry
from mammo_node.web.media import new_boundary
from tests.helpers.environment import PG_ADMIN_URL, pg_database
from tests.helpers.mg import mg_dataset
from tests.helpers.site import (
    ADMIN_TOKEN,
    READ_TOKEN,
    Site,
    extra_server,
    running_site,
    synth_exam,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp(f"web-{request.param}")
    if request.param == "sqlite":
        with running_site(data_dir, f"sqlite:///{data_dir / 'node.db'}") as built:
            yield built
        return
    request.getfixturevalue("pg_server")
    databases = pg_database(PG_ADMIN_URL)
    url = next(databases)
    try:
        with running_site(data_dir, url) as built:
            yield built
    finally:
        databases.close()


def client(site: Site, headers: dict[str, str] = ADMIN) -> DICOMwebClient:
    return DICOMwebClient(url=f"{site.base}/dicomweb", headers=headers)


def value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value") or [None]
    return values[0]


def multipart_body(datasets: list[Dataset | bytes]) -> tuple[bytes, str]:
    boundary = new_boundary()
    chunks = []
    for ds in datasets:
        if isinstance(ds, bytes):
            data = ds
        else:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            data = buffer.getvalue()
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'{MULTIPART_DICOM}; boundary="{boundary}"'


# --- STOW-RS, QIDO-RS, WADO-RS with dicomweb-client ----------------------------------------------
def test_store_search_retrieve_with_dicomweb_client(site: Site, tmp_path: Path) -> None:
    web = client(site)
    exam = synth_exam(f"STOW-{site.dialect}", "normal", "", dt.date(2025, 1, 2))
    datasets = list(exam.datasets.values())
    answer = web.store_instances(datasets)
    stored = answer.ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in stored} == {
        ds.SOPInstanceUID for ds in datasets
    }
    assert answer.RetrieveURL.endswith(f"/studies/{exam.study_uid}")
    assert "FailedSOPSequence" not in answer
    with site.db.read() as session:
        rows = session.scalars(
            select(Instance).where(
                Instance.sop_instance_uid.in_([str(d.SOPInstanceUID) for d in datasets])
            )
        ).all()
        assert {r.source for r in rows} == {"stow"} and {r.calling_ae for r in rows} == {"alice"}

    studies = web.search_for_studies(search_filters={"PatientID": exam.patient_id})
    assert [value(s, "0020000D") for s in studies] == [exam.study_uid]
    assert value(studies[0], "00201208") == 4 and value(studies[0], "00080061") == "MG"
    series = web.search_for_series(exam.study_uid)
    assert len(series) == 4
    instances = web.search_for_instances(exam.study_uid, search_filters={"InstanceNumber": 1})
    assert {value(i, "00080018") for i in instances} == {str(d.SOPInstanceUID) for d in datasets}
    assert {value(i, "00280100") for i in instances} == {16}  # BitsAllocated from the header

    ds = datasets[2]
    retrieved = web.retrieve_instance(exam.study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert retrieved.PixelData == ds.PixelData and retrieved.PatientID == exam.patient_id
    whole = web.retrieve_study(exam.study_uid)
    assert sorted(d.SOPInstanceUID for d in whole) == sorted(d.SOPInstanceUID for d in datasets)

    metadata = web.retrieve_instance_metadata(
        exam.study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert "Value" not in metadata["7FE00010"] and "InlineBinary" not in metadata["7FE00010"]
    assert value(metadata, "00100020") == exam.patient_id
    bulk = web.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])
    assert b"".join(bulk) == ds.PixelData

    png = web.retrieve_instance_rendered(
        exam.study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=("image/png",)
    )
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (int(ds.Columns), int(ds.Rows)))
    frames = web.retrieve_instance_frames(
        exam.study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1]
    )
    assert frames[0] == ds.PixelData


def test_the_nodes_own_sr_is_searched_and_retrieved(site: Site) -> None:
    web = client(site, READER)
    study = site.scored.study_uid
    found = web.search_for_instances(study, search_filters={"SOPClassUID": ComprehensiveSRStorage})
    reports = set(site.outputs["sr"] + site.outputs["sr_view"])
    assert {value(i, "00080018") for i in found} == reports
    series = web.search_for_series(study, search_filters={"Modality": "SR"})
    assert len(series) >= 1
    sr_uid = site.outputs["sr"][0]
    hit = next(i for i in found if value(i, "00080018") == sr_uid)
    sr = web.retrieve_instance(study, value(hit, "0020000E"), sr_uid)
    with site.db.read() as session:
        row = session.scalars(select(Instance).where(Instance.sop_instance_uid == sr_uid)).one()
        stored = dcmread(site.ingestor.store.path(row.rel_path))
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.ContentSequence == stored.ContentSequence
    with pytest.raises(HTTPError) as refused:
        web.retrieve_instance_rendered(study, value(hit, "0020000E"), sr_uid)
    assert refused.value.response.status_code == 406


def test_stow_partial_success_conflict_and_reasons(site: Site) -> None:
    study = generate_uid()
    good = mg_dataset("L", "CC", study_uid=study, patient_id="STOW-MIX")
    stranger = mg_dataset("R", "CC", patient_id="STOW-MIX")  # another study
    # not a storage SOP class (a Query/Retrieve model): refused; a dose report: filed
    query = mg_dataset("L", "CC", study_uid=study, sop_class="1.2.840.10008.5.1.4.1.2.2.1")
    dose = habits.dose_report(good)
    body, content_type = multipart_body([good, stranger, query, dose, b"not a dicom file"])
    r = httpx.post(
        f"{site.base}/dicomweb/studies/{study}",
        content=body,
        headers={**ADMIN, "Content-Type": content_type},
    )
    assert r.status_code == 202, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    answer = r.json()
    assert [value(i, "00081155") for i in answer["00081199"]["Value"]] == [
        good.SOPInstanceUID,
        dose.SOPInstanceUID,
    ]
    reasons = {value(i, "00081155"): value(i, "00081197") for i in answer["00081198"]["Value"]}
    assert reasons[stranger.SOPInstanceUID] == 0x0110
    assert reasons[query.SOPInstanceUID] == 0x0122
    assert reasons[None] >= 0xC000  # unreadable part: "cannot understand"
    assert "belongs to study" in r.headers["warning"] and "SOP class" in r.headers["warning"]

    body, content_type = multipart_body([stranger])
    r = httpx.post(
        f"{site.base}/dicomweb/studies/{study}",
        content=body,
        headers={**ADMIN, "Content-Type": content_type},
    )
    assert r.status_code == 409
    assert value(r.json()["00081198"]["Value"][0], "00081197") == 0x0110


def test_stow_refusals(site: Site) -> None:
    ds = mg_dataset(patient_id="STOW-REFUSE")
    body, content_type = multipart_body([ds])
    url = f"{site.base}/dicomweb/studies"
    cases = [
        ({"Content-Type": "application/json"}, body, 415),
        (
            {"Content-Type": content_type.replace("application/dicom", "application/dicom+xml")},
            body,
            415,
        ),
        ({"Content-Type": content_type}, body[:-30], 400),
        ({"Content-Type": content_type, "Accept": "application/dicom+xml"}, body, 406),
    ]
    for headers, payload, status in cases:
        r = httpx.post(url, content=payload, headers={**ADMIN, **headers})
        assert r.status_code == status, (headers, r.text)
        assert r.json()["reason"] and "299 mammo-node" in r.headers["warning"]
    assert (
        httpx.post(url, content=body, headers={**READER, "Content-Type": content_type}).status_code
        == 403
    )
    with extra_server(site, max_stow_bytes=2_000) as small:
        r = httpx.post(
            f"{small}/dicomweb/studies",
            content=body,
            headers={**ADMIN, "Content-Type": content_type},
        )
        assert r.status_code == 413 and "exceeds" in r.json()["reason"]


def test_wado_transcodes_only_what_the_client_cannot_take(site: Site) -> None:
    ds = mg_dataset(rows=64, columns=48, patient_id="RLE-1")
    pixels = ds.pixel_array.copy()
    ds.compress(RLELossless, pixels)
    web = client(site)
    web.store_instances([ds])
    series, sop = ds.SeriesInstanceUID, ds.SOPInstanceUID
    as_stored = web.retrieve_instance(ds.StudyInstanceUID, series, sop)  # transfer-syntax=*
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless
    explicit = web.retrieve_instance(
        ds.StudyInstanceUID,
        series,
        sop,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert explicit.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(explicit.pixel_array, pixels)
    url = f"{site.base}/dicomweb/studies/{ds.StudyInstanceUID}/series/{series}/instances/{sop}"
    plain = httpx.get(url, headers={**ADMIN, "Accept": MULTIPART_DICOM})  # absent: ELE
    assert "transfer-syntax=1.2.840.10008.1.2.1" in plain.text[:400]
    jpeg = f"{MULTIPART_DICOM}; transfer-syntax=1.2.840.10008.1.2.4.50"
    r = httpx.get(url, headers={**ADMIN, "Accept": jpeg})
    assert r.status_code == 406 and "Explicit VR Little Endian" in r.json()["reason"]


def test_qido_matching(site: Site) -> None:
    web = client(site, READER)
    scored, partial = site.scored, site.partial

    def studies(**filters: Any) -> list[str]:
        return sorted(value(s, "0020000D") for s in web.search_for_studies(search_filters=filters))

    both = sorted([scored.study_uid, partial.study_uid])
    assert studies(PatientName="synthetic^patient000?") == both  # PN: case-insensitive
    assert studies(PatientID="WEB-0002") == [partial.study_uid]
    assert studies(PatientID="web-0002") == []  # LO: case-sensitive, on both backends
    assert studies(PatientID="WEB-*", StudyDate="20260101-20260401") == [scored.study_uid]
    assert studies(PatientID="WEB-*", StudyDate="20260401-") == [partial.study_uid]
    assert studies(PatientID="WEB-*", StudyDate="-20260304") == [scored.study_uid]
    assert studies(StudyInstanceUID=",".join(both)) == both
    assert studies(PatientID="WEB-*", ModalitiesInStudy="SR") == [scored.study_uid]
    assert studies(
        AccessionNumber=scored.datasets[next(iter(scored.datasets))].AccessionNumber
    ) == [scored.study_uid]
    first = web.search_for_studies(search_filters={"PatientID": "WEB-*"}, limit=1)
    second = web.search_for_studies(search_filters={"PatientID": "WEB-*"}, limit=1, offset=1)
    assert len(first) == len(second) == 1 and first != second
    with_fields = web.search_for_studies(
        search_filters={"PatientID": "WEB-0001"}, fields=["StudyID", "00180015"]
    )
    assert value(with_fields[0], "00200010") is not None  # Study ID, read from the header

    r = httpx.get(
        f"{site.base}/dicomweb/studies",
        params={"PatientID": "WEB-*", "limit": "1", "fuzzymatching": "true"},
        headers=READER,
    )
    assert r.status_code == 200 and "additional results" in r.headers["warning"]
    assert "fuzzymatching" in r.headers["warning"]
    for params in ({"NoSuchAttribute": "x"}, {"StudyDate": "2026"}, {"limit": "x"}):
        r = httpx.get(f"{site.base}/dicomweb/studies", params=params, headers=READER)
        assert r.status_code == 400 and r.json()["reason"]


def test_wado_errors(site: Site) -> None:
    base = f"{site.base}/dicomweb"
    study = site.scored.study_uid
    for url, status in (
        (f"{base}/studies/{generate_uid()}", 404),
        (f"{base}/studies/{study}/series/{generate_uid()}/metadata", 404),
        (f"{base}/studies/1.2.abc", 400),
        (f"{base}/studies/{study}/series/1.2/instances/3.4/frames/0", 400),
    ):
        r = httpx.get(url, headers=READER)
        assert r.status_code == status, (url, r.text)
        assert r.json()["reason"]
    r = httpx.get(f"{base}/studies/{study}/metadata", headers={**READER, "Accept": "text/xml"})
    assert r.status_code == 406
    r = httpx.get(f"{base}/studies/{study}/metadata", headers=READER)
    assert r.status_code == 200 and len(r.json()) == 4 + 15  # 13 + CAD SR + GSPS


# --- authentication -------------------------------------------------------------------------------
def test_dicomweb_needs_a_token_of_the_right_role(site: Site, tmp_path: Path) -> None:
    url = f"{site.base}/dicomweb/studies"
    r = httpx.get(url)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert (
        httpx.get(url, headers={"Authorization": "Bearer wrong-token-0000000000"}).status_code
        == 401
    )
    assert httpx.get(url, headers={"Authorization": "Basic abc"}).status_code == 401
    assert httpx.get(url, headers=READER).status_code == 200
    token_file = tmp_path / "tokens"
    token_file.write_text(hash_entry("filed", "read", "filed-secret-0123456789") + "\n")
    with extra_server(site, {"api_tokens": [], "api_tokens_file": token_file}) as other:
        assert (
            httpx.get(
                f"{other}/dicomweb/studies",
                headers={"Authorization": "Bearer filed-secret-0123456789"},
            ).status_code
            == 200
        )
        assert httpx.get(f"{other}/dicomweb/studies", headers=READER).status_code == 401
    with extra_server(site, {"loopback_without_token": True}) as loose:
        assert httpx.get(f"{loose}/dicomweb/studies").status_code == 200


# --- pages ---------------------------------------------------------------------------------------
def test_worklist_hides_identifiers_until_signed_in(site: Site) -> None:
    name = str(site.scored.datasets[next(iter(site.scored.datasets))].PatientName)
    shown_name = name.replace("^", " ")
    anonymous = httpx.get(f"{site.base}/?sort=risk")  # no exams, scores or reasons: sign in
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=%2F%3Fsort%3Drisk"
    with extra_server(site, {"anonymous_view": True}) as wall:  # opt-in: counts only
        counts = httpx.get(f"{wall}/")
        assert counts.status_code == 200
        assert shown_name not in counts.text and "WEB-0001" not in counts.text
        assert site.scored.study_uid not in counts.text and "+4.25" not in counts.text
        assert re.search(r"scored <b>[1-9]", counts.text)
        assert counts.headers["cache-control"] == "no-store"
        assert "default-src 'self'" in counts.headers["content-security-policy"]

    with httpx.Client(base_url=site.base, follow_redirects=True) as browser:
        refused = browser.post("/login", data={"token": "not-a-token-at-all-000"})
        assert refused.status_code == 401 and "not valid" in refused.text
        signed = browser.post("/login", data={"token": READ_TOKEN, "next": "/?sort=risk"})
        assert signed.status_code == 200 and str(signed.url).endswith("/?sort=risk")
        cookie = signed.history[0].headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        page = browser.get("/")
        assert shown_name in page.text and "WEB-0001" in page.text and "rachel" in page.text
        rows = re.findall(r'data-study="([^"]+)"', browser.get("/?sort=risk").text)
        assert rows[0] == site.scored.study_uid  # highest exam score first
        partial_only = browser.get("/?state=partial").text
        assert site.partial.study_uid in partial_only and site.scored.study_uid not in partial_only
        assert browser.get("/?q=WEB-0002").text.count('class="exam"') == 1
        browser.post("/logout")
        assert shown_name not in browser.get("/").text
    forged = httpx.get(f"{site.base}/", cookies={"mammo_session": "e30.AAAA"})
    assert forged.status_code == 303 and shown_name not in forged.text
    assert httpx.get(f"{site.base}/?state=bogus").status_code == 400


def test_exam_page_hangs_four_views_with_scores_rois_and_deliveries(site: Site) -> None:
    study = site.scored.study_uid
    page = httpx.get(f"{site.base}/exams/{study}", headers=READER)
    assert page.status_code == 200
    html = page.text
    assert re.findall(r'<figure class="view [^"]*" data-slot="([^"]+)"', html) == [
        "R-CC",
        "L-CC",
        "R-MLO",
        "L-MLO",
    ]
    assert "+4.25" in html and "+2.75" in html and "-1.75" in html and "recall" in html
    assert "DEMO" in html
    assert "receiving → <b>scored</b>" in html  # the history reads each step's from state
    assert 'class="stale"' not in html  # the result is current: no image changed since
    r_cc = site.inference.views[next(s for s in site.inference.views if str(s) == "R-CC")]
    x0, y0, x1, y1 = r_cc.roi
    assert f'x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}"' in html
    for sc_uid in site.outputs["sc"]:
        assert f"/views/{sc_uid}.png?hang=" in html  # link to the capture sent to PACS
    for seg_uid in site.outputs["seg"]:
        assert f"/overlays/{seg_uid}.png?hang=" in html  # the toggled overlay
    assert 'data-destination="pacs"' in html and "delivered" in html
    assert "called AE title not recognised" in html  # the failing destination says why
    partial = httpx.get(f"{site.base}/exams/{site.partial.study_uid}", headers=READER).text
    assert "R MLO missing" in partial and "missing views: R-MLO" in partial
    anonymous = httpx.get(f"{site.base}/exams/{study}")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    assert "WEB-0001" not in anonymous.text and "+4.25" not in anonymous.text
    assert httpx.get(f"{site.base}/exams/{generate_uid()}", headers=READER).status_code == 404


def test_view_images_are_hung_cached_and_only_for_signed_in_users(site: Site) -> None:
    study = site.scored.study_uid
    sops = {slot: site.sop(site.scored, slot) for slot in ("R-CC", "L-CC")}
    assert httpx.get(f"{site.base}/exams/{study}/views/{sops['R-CC']}.png").status_code == 401
    sides = {}
    for slot, sop in sops.items():
        r = httpx.get(f"{site.base}/exams/{study}/views/{sop}.png", headers=READER)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        grey = np.asarray(Image.open(io.BytesIO(r.content)).convert("L"), dtype=float)
        half = grey.shape[1] // 2
        sides[slot] = "right" if grey[:, half:].mean() > grey[:, :half].mean() else "left"
    # back to back: the R breast's chest wall on its right edge, the L breast's on its left
    assert sides == {"R-CC": "right", "L-CC": "left"}
    cached = list((site.settings.data_dir / "cache" / "views").glob(f"{sops['R-CC']}.*.png"))
    assert len(cached) == 1
    page = httpx.get(f"{site.base}/exams/{study}", headers=READER).text
    figure = page.split('data-slot="R-CC"', 1)[1].split("</figure>", 1)[0]
    overlay_url = re.search(r'class="heat" src="([^"]+)"', figure).group(1)  # type: ignore[union-attr]
    overlay = httpx.get(site.base + overlay_url.replace("&amp;", "&"), headers=READER)
    alpha = np.asarray(Image.open(io.BytesIO(overlay.content)).convert("RGBA"))[..., 3]
    ys, xs = np.nonzero(alpha > 128)
    coa = site.inference.views[next(s for s in site.inference.views if str(s) == "R-CC")].coa
    # the salient region surrounds the centre of attention (same grid, no flip for R-CC here)
    assert abs(xs.mean() - coa[0]) < 4 and abs(ys.mean() - coa[1]) < 4
    sc = site.outputs["sc"][0]
    capture = httpx.get(
        f"{site.base}/exams/{study}/views/{sc}.png?hang={sops['R-CC']}", headers=READER
    )
    assert capture.status_code == 200
    other = httpx.get(f"{site.base}/exams/{study}/views/{generate_uid()}.png", headers=READER)
    assert other.status_code == 404


def test_views_are_hung_from_patient_orientation_and_monochrome1_shows_tissue_bright(
    site: Site,
) -> None:
    # an R-CC stored the "wrong" way round: chest wall at column 0 (rows run anterior)
    exam = synth_exam(f"HANG-{site.dialect}", "normal", "", dt.date(2024, 2, 2))
    unmirrored = exam.datasets[Slot.parse("R-CC")]
    pixels = unmirrored.pixel_array[:, ::-1].copy()
    unmirrored.PixelData = pixels.tobytes()
    unmirrored.PatientOrientation = ["A", "L"]
    client(site).store_instances([unmirrored])
    study, sop = exam.study_uid, str(unmirrored.SOPInstanceUID)
    assert site.server.app.state.mammo.views.flips_for(study, sop).horizontal
    grey = np.asarray(
        Image.open(
            io.BytesIO(
                httpx.get(f"{site.base}/exams/{study}/views/{sop}.png", headers=READER).content
            )
        ).convert("L"),
        dtype=float,
    )
    half = grey.shape[1] // 2
    assert grey[:, half:].mean() > grey[:, :half].mean()  # chest wall (tissue) on the right
    # MONOCHROME1 (the partial exam): dense tissue bright, air dark, L chest wall on the left
    l_cc = site.sop(site.partial, "L-CC")
    grey = np.asarray(
        Image.open(
            io.BytesIO(
                httpx.get(
                    f"{site.base}/exams/{site.partial.study_uid}/views/{l_cc}.png", headers=READER
                ).content
            )
        ).convert("L"),
        dtype=float,
    )
    rows = slice(grey.shape[0] // 4, 3 * grey.shape[0] // 4)
    assert grey[rows, :8].mean() > grey[rows, -8:].mean() + 60


# --- API and operations --------------------------------------------------------------------------
def test_json_api(site: Site) -> None:
    assert httpx.get(f"{site.base}/api/exams").status_code == 401
    listing = httpx.get(f"{site.base}/api/exams", params={"sort": "risk"}, headers=READER).json()
    assert listing[0]["study_uid"] == site.scored.study_uid
    assert listing[0]["result"]["exam_score"] == pytest.approx(4.25)
    detail = httpx.get(f"{site.base}/api/exams/{site.scored.study_uid}", headers=READER).json()
    assert detail["slots"]["R-CC"] == site.sop(site.scored, "R-CC")
    assert detail["result"]["breast_scores"] == {"L": -1.75, "R": 4.25}
    assert detail["result"]["current"] and detail["result"]["model"]["is_demo"]
    assert listing[0]["result"]["current"] and listing[0]["result"]["model"]["is_demo"]
    assert detail["events"][-1]["from"] == "receiving" and detail["events"][-1]["to"] == "scored"
    states = {d["destination"]: d["summary"] for d in detail["deliveries"]}
    assert states == {"pacs": "delivered", "reading-room": "failed"}
    assert all("rel_path" not in o for o in detail["outputs"])
    missing = httpx.get(f"{site.base}/api/exams/{generate_uid()}", headers=READER)
    assert missing.status_code == 404 and "no exam" in missing.json()["reason"]
    assert httpx.get(f"{site.base}/api/status").json()["exams"]["scored"] >= 1


def test_health_readiness_and_metrics(site: Site) -> None:
    assert httpx.get(f"{site.base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{site.base}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"]
    with extra_server(
        site, {"min_free_disk_mb": 10**9}, model_ready=lambda: (False, "bundle still loading")
    ) as sick:
        r = httpx.get(f"{sick}/readyz")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert not checks["storage"]["ok"] and checks["model"]["detail"] == "bundle still loading"
    metrics.instance_received("dimse", "stored")
    unknown = httpx.get(f"{site.base}/dicomweb/studies/{generate_uid()}/metadata", headers=READER)
    assert unknown.status_code == 404  # counted as a DICOMweb 4xx (this test's own request)
    text = httpx.get(f"{site.base}/metrics").text
    assert 'mammo_exams{state="scored"} 1.0' in text
    assert 'mammo_exams{state="partial"} 1.0' in text
    assert re.search(r'mammo_outbox_items\{state="dead"\} 15\.0', text)  # 13 + CAD SR + GSPS
    assert re.search(
        r'mammo_instances_received_total\{outcome="stored",source="dimse"\} [1-9]', text
    )
    assert 'mammo_http_requests_total{group="dicomweb",status="4xx"}' in text


def test_audit_trail_and_logs_without_patient_data(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exam = synth_exam(f"AUDIT-{site.dialect}", "normal", "", dt.date(2024, 6, 1))
    name = str(exam.datasets[next(iter(exam.datasets))].PatientName)
    web = client(site)
    web.store_instances(list(exam.datasets.values()))
    web.search_for_studies(search_filters={"PatientName": name})
    httpx.get(f"{site.base}/exams/{exam.study_uid}", headers=READER)
    site.server.app.state.mammo.audit.flush()
    events = [e for e in iter_events(site.db) if e["target"] == exam.study_uid]
    assert {(e["actor"], e["action"]) for e in events} >= {
        ("alice", "received"),
        ("rachel", "viewed"),
    }
    received = next(e for e in events if e["action"] == "received")
    assert sorted(received["detail"]["sop_instance_uids"]) == sorted(
        str(d.SOPInstanceUID) for d in exam.datasets.values()
    )
    searched = [e for e in iter_events(site.db, action="searched") if e["actor"] == "alice"]
    assert searched and searched[-1]["detail"]["keys"] == ["PatientName"]
    assert name not in json.dumps(events + searched)
    for text in (name, name.replace("^", " "), exam.patient_id):
        assert text not in caplog.text
