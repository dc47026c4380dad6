"""TLS, the association limit and the free-disk refusal, against real peers."""

from __future__ import annotations

import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from mammo_node.db.models import Association
from tests.helpers.tools import dcmtk


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    node_key, node_cert = _certificate(folder, "node")
    client_key, client_cert = _certificate(folder, "client")
    return {
        "node_key": node_key,
        "node_cert": node_cert,
        "client_key": client_key,
        "client_cert": client_cert,
    }


def test_tls_echo_with_dcmtk_and_pynetdicom(
    node_factory: Any, certificates: dict[str, Path]
) -> None:
    node = node_factory(
        tls_cert=certificates["node_cert"],
        tls_key=certificates["node_key"],
        tls_ca=certificates["client_cert"],
    )
    # dcmtk, mutual TLS: its certificate is the one the node trusts
    run = subprocess.run(
        [
            dcmtk("echoscu"),
            "-aec",
            "MAMMO_NODE",
            "+tls",
            str(certificates["client_key"]),
            str(certificates["client_cert"]),
            "+cf",
            str(certificates["node_cert"]),
            "127.0.0.1",
            str(node.scp.port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    # pynetdicom with TLS
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(certificates["node_cert"])
    )
    context.load_cert_chain(certificates["client_cert"], certificates["client_key"])
    ae = AE()
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", node.scp.port, ae_title="MAMMO_NODE", tls_args=(context, "localhost")
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    # plain TCP to a TLS port gets nowhere; a client without a trusted cert neither
    plain = subprocess.run(
        [dcmtk("echoscu"), "-to", "5", "-aec", "MAMMO_NODE", "127.0.0.1", str(node.scp.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.returncode != 0
    untrusted = subprocess.run(
        [dcmtk("echoscu"), "-aec", "MAMMO_NODE", "+tla", "-ic", "127.0.0.1", str(node.scp.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert untrusted.returncode != 0
    with node.db.read() as session:
        assert all(row.tls for row in session.scalars(select(Association)))


def test_association_limit_and_free_disk_refusal(node_factory: Any) -> None:
    node = node_factory(max_associations=1)
    ae = AE()
    ae.add_requested_context(Verification)
    first = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert first.is_established
    second = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert second.is_rejected  # local limit exceeded
    first.release()

    full = node_factory(min_free_disk_mb=10**9)  # no disk has a petabyte free
    refused = ae.associate("127.0.0.1", full.scp.port, ae_title="MAMMO_NODE")
    assert refused.is_rejected
    assert refused.acceptor.primitive.result == 0x02  # transient: try again later
    with full.db.read() as session:
        (row,) = session.scalars(select(Association)).all()
        assert not row.accepted and "storage full" in row.reject_reason


def test_concurrent_associations_are_all_served(node_factory: Any) -> None:
    """Six associations at once (each its own thread in the SCP) all get answered."""
    node = node_factory()
    results: list[bool] = []

    def echo() -> None:
        ae = AE()
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
        results.append(assoc.is_established and assoc.send_c_echo().Status == 0)
        assoc.release()

    threads = [threading.Thread(target=echo) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [True] * 6
