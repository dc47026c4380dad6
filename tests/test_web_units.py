"""The web layer's pure parts: media negotiation, multipart, tokens and sessions, QIDO parsing,
the greyscale pipeline and the hanging protocol."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from mammo_node.config import Settings
from mammo_node.errors import ConfigError
from mammo_node.web.auth import (
    Role,
    SessionSigner,
    TokenStore,
    hash_entry,
    load_or_create_secret,
    parse_entry,
)
from mammo_node.web.errors import DicomWebError
from mammo_node.web.media import (
    MultipartReceiver,
    Part,
    choose_media,
    dicom_acceptance,
    new_boundary,
    parse_accept,
    stream_multipart,
)
from mammo_node.web.qido import STUDY, parse_query
from mammo_node.web.render import Window, display_image, hanging_flips, window_values
from tests.helpers.mg import mg_dataset

SECRET = "a-long-enough-secret-value"


# --- media types -------------------------------------------------------------------------------
def test_accept_ranges_are_ordered_by_quality() -> None:
    ranges = parse_accept('image/png;q=0.5, image/jpeg, multipart/related; type="a/b"; q=0')
    assert [r.type for r in ranges] == ["image/jpeg", "image/png"]
    assert choose_media("image/png;q=0.5, image/jpeg", ["image/jpeg", "image/png"]) == "image/jpeg"
    assert choose_media(None, ["image/jpeg", "image/png"]) == "image/jpeg"  # PS3.18 default
    with pytest.raises(DicomWebError) as refused:
        choose_media("application/xml", ["application/dicom+json"])
    assert refused.value.status == 406


def test_dicom_acceptance_follows_the_transfer_syntax_parameter() -> None:
    default = dicom_acceptance('multipart/related; type="application/dicom"')
    assert default.choose("1.2.840.10008.1.2.1") == "1.2.840.10008.1.2.1"
    assert default.choose("1.2.840.10008.1.2.5") == "1.2.840.10008.1.2.1"  # transcode to ELE
    anything = dicom_acceptance('multipart/related; type="application/dicom"; transfer-syntax=*')
    assert anything.choose("1.2.840.10008.1.2.5") == "1.2.840.10008.1.2.5"
    jpeg = dicom_acceptance(
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    )
    assert jpeg.choose("1.2.840.10008.1.2.1") is None  # the node does not encode JPEG
    with pytest.raises(DicomWebError) as refused:
        dicom_acceptance("application/dicom+json")
    assert refused.value.status == 406


def test_multipart_written_is_read_back_part_by_part(tmp_path: Path) -> None:
    first = tmp_path / "a.bin"
    first.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # spans several 1 MiB chunks
    boundary = new_boundary()
    body = b"".join(
        stream_multipart(
            [
                Part("application/dicom", path=first),
                Part("application/dicom", produce=lambda: b"xy"),
            ],
            boundary,
        )
    )
    made: list[Path] = []

    def new_file() -> Path:
        made.append(tmp_path / f"part{len(made)}")
        made[-1].touch()
        return made[-1]

    receiver = MultipartReceiver(boundary, new_file)
    for start in range(0, len(body), 65_537):  # odd chunk size: boundaries straddle chunks
        receiver.feed(body[start : start + 65_537])
    parts = receiver.finish()
    assert [p.content_type for p in parts] == ["application/dicom"] * 2
    assert parts[0].path.read_bytes() == first.read_bytes()
    assert parts[1].path.read_bytes() == b"xy"
    receiver.cleanup()
    assert not any(p.exists() for p in made)


def test_truncated_multipart_is_refused(tmp_path: Path) -> None:
    boundary = new_boundary()
    body = b"".join(
        stream_multipart([Part("application/dicom", produce=lambda: b"z" * 999)], boundary)
    )
    receiver = MultipartReceiver(boundary, lambda: Path(tmp_path / "t").resolve())
    (tmp_path / "t").touch()
    receiver.feed(body[:-40])
    with pytest.raises(DicomWebError) as refused:
        receiver.finish()
    assert refused.value.status == 400
    receiver.cleanup()


# --- tokens and sessions -------------------------------------------------------------------------
def test_token_entries_plain_and_hashed(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# ops\n{hash_entry('bob', 'read', SECRET + '-bob')}\n")
    settings = Settings(
        data_dir=tmp_path, api_tokens=[f"amy:admin:{SECRET}"], api_tokens_file=token_file
    )
    store = TokenStore.from_settings(settings)
    assert store.verify(SECRET).name == "amy"  # type: ignore[union-attr]
    assert store.verify(SECRET + "-bob").role is Role.READ  # type: ignore[union-attr]
    assert store.verify("wrong" * 5) is None
    assert SECRET not in repr(store.entries)  # digests only
    with pytest.raises(ConfigError, match="role 'owner'"):
        parse_entry(f"x:owner:{SECRET}", "test")
    with pytest.raises(ConfigError, match="at least 16"):
        parse_entry("x:read:short", "test")
    with pytest.raises(ConfigError, match="64 hex"):
        parse_entry("x:read:sha256:abc", "test")
    with pytest.raises(ConfigError, match="unique"):
        TokenStore([parse_entry(f"x:read:{SECRET}", "t"), parse_entry(f"x:admin:{SECRET}", "t")])


def test_session_cookie_is_signed_expires_and_dies_with_its_token(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path)
    assert load_or_create_secret(tmp_path) == secret
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    store = TokenStore([parse_entry(f"amy:admin:{SECRET}", "t")])
    signer = SessionSigner(secret, lifetime=60)
    cookie = signer.issue(store.entries[0], now=1000.0)
    assert signer.verify(cookie, store, now=1030.0).name == "amy"  # type: ignore[union-attr]
    assert signer.verify(cookie, store, now=1061.0) is None  # expired
    payload, signature = cookie.split(".")
    assert signer.verify(payload[:-2] + "xx." + signature, store, now=1030.0) is None
    assert SessionSigner(os.urandom(32)).verify(cookie, store, now=1030.0) is None
    revoked = TokenStore([parse_entry(f"amy:admin:{SECRET}-new", "t")])
    assert signer.verify(cookie, revoked, now=1030.0) is None


# --- QIDO parameters -----------------------------------------------------------------------------
def test_qido_parameters_are_parsed_and_checked() -> None:
    query = parse_query(
        [
            ("PatientName", "smith*"),
            ("00100020", "P1"),
            ("limit", "5"),
            ("offset", "10"),
            ("includefield", "00081030,StudyID"),
            ("fuzzymatching", "true"),
            ("SeriesDescription", "x"),
        ],
        STUDY,
    )
    assert [(a.keyword, v) for a, v in query.matches] == [
        ("PatientName", "smith*"),
        ("PatientID", "P1"),
    ]
    assert (query.limit, query.offset) == (5, 10)
    assert 0x00200010 in query.include
    assert any("fuzzymatching" in w for w in query.warnings)
    assert any("SeriesDescription" in w for w in query.warnings)  # a series attribute
    for bad in (
        [("NoSuchKeyword", "x")],
        [("StudyDate", "2024")],
        [("limit", "-1")],
        [("StudyDate", "20240101-2024")],
        [("includefield", "Bogus")],
    ):
        with pytest.raises(DicomWebError) as refused:
            parse_query(bad, STUDY)
        assert refused.value.status == 400


# --- rendering -----------------------------------------------------------------------------------
def test_window_formula_matches_ps3_3() -> None:
    values = np.array([0.0, 1499.5, 2000.0, 2500.5, 4000.0], np.float32)
    linear = window_values(values, Window(2000.0, 1001.0))
    assert linear[0] == 0.0 and linear[-1] == 1.0 and linear[2] == pytest.approx(0.5, abs=1e-3)
    exact = window_values(values, Window(2000.0, 1000.0, "LINEAR_EXACT"))
    assert exact[1] == pytest.approx(0.0, abs=1e-3) and exact[3] == pytest.approx(1.0, abs=1e-3)
    sigmoid = window_values(values, Window(2000.0, 1000.0, "SIGMOID"))
    assert sigmoid[2] == pytest.approx(0.5) and 0 < sigmoid[0] < 0.01


def test_display_applies_rescale_window_and_monochrome1_inversion() -> None:
    ds = mg_dataset(
        rows=4,
        columns=256,
        PhotometricInterpretation="MONOCHROME1",
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=1000,
        WindowWidth=801,
    )
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))
    ds.PixelData = ramp.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    shown = display_image(ds)
    expected = np.clip(((ramp * 2.0 - 100) - 999.5) / 800.0 + 0.5, 0, 1)
    assert np.abs(shown.astype(float) - np.rint((1.0 - expected) * 255)).max() <= 1
    assert shown[0, 0] == 255 and shown[0, -1] == 0  # MONOCHROME1: low values show white


def test_hanging_flips_from_patient_orientation() -> None:
    # as detectors store them: R chest wall on the right (rows run to P), L on the left (A)
    assert hanging_flips("R", "CC", ["P", "L"]).horizontal is False
    assert hanging_flips("L", "CC", ["A", "R"]).horizontal is False
    assert hanging_flips("R", "CC", ["A", "L"]).horizontal is True
    assert hanging_flips("L", "MLO", ["P", "FR"]).horizontal is True
    # MLO with the head at the bottom is turned over; CC with the lateral side down too
    assert hanging_flips("L", "MLO", ["A", "HR"]).vertical is True
    assert hanging_flips("L", "CC", ["A", "L"]).vertical is True
    assert hanging_flips("R", "CC", ["P", "L"]).vertical is False
    # no orientation: the brighter (tissue) side is the chest wall
    image = np.zeros((20, 40), np.uint8)
    image[:, :10] = 200
    assert hanging_flips("R", "CC", None, image).horizontal is True
    assert hanging_flips("L", "CC", None, image).horizontal is False


def test_rendered_file_roundtrip(tmp_path: Path) -> None:
    from PIL import Image

    from mammo_node.web.render import render_file

    ds = mg_dataset(rows=300, columns=200)
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    import io

    png = Image.open(io.BytesIO(render_file(path, "image/png", viewport=(100, 100))))
    assert png.size == (67, 100)
    jpeg = Image.open(io.BytesIO(render_file(path, "image/jpeg")))
    assert jpeg.format == "JPEG" and jpeg.size == (200, 300)
    assert dcmread(path).Rows == 300
