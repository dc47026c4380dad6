"""Who the web server trusts: local requests only when they really are local, the Host header,
cookies marked Secure behind HTTPS, HTTPS of its own, and a database only its owner reads."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mammo_node.db.session import create_db_engine
from tests.helpers.site import READ_TOKEN, Site, extra_server, running_site
from tests.helpers.tools import wait_for

READER = {"Authorization": f"Bearer {READ_TOKEN}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("trust")
    with running_site(data_dir, f"sqlite:///{data_dir / 'node.db'}") as built:
        yield built


def _get(base: str, path: str, *, source: str = "127.0.0.1", **headers: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(base + path, headers=headers)


def test_loopback_mode_trusts_only_requests_made_on_this_machine(site: Site) -> None:
    with extra_server(site, {"loopback_without_token": True}) as loose:
        port = loose.rsplit(":", 1)[1]
        assert _get(loose, "/api/exams").status_code == 200
        assert _get(loose, "/api/exams", host=f"localhost:{port}").status_code == 200
        # a proxy (or anyone) that says the request came from elsewhere
        forwarded = _get(loose, "/api/exams", **{"x-forwarded-for": "10.1.2.3"})
        assert forwarded.status_code == 401
        assert _get(loose, "/api/exams", forwarded="for=10.1.2.3").status_code == 401
        # a sidecar on 127.0.0.6 forging X-Forwarded-For: 127.0.0.1
        sidecar = _get(loose, "/api/exams", source="127.0.0.6", **{"x-forwarded-for": "127.0.0.1"})
        assert sidecar.status_code == 401
        assert _get(loose, "/api/exams", source="127.0.0.6").status_code == 401
        # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1
        assert _get(loose, "/api/exams", host=f"evil.example:{port}").status_code == 401


def test_trusted_hosts_refuse_other_host_headers(site: Site) -> None:
    settings = {"trusted_hosts": ["node.example.org", "*.pacs.example.org", "127.0.0.1"]}
    with extra_server(site, settings) as strict:
        assert _get(strict, "/api/exams", **READER).status_code == 200
        for host in ("node.example.org", "ai.pacs.example.org:8443"):
            assert _get(strict, "/api/exams", host=host, **READER).status_code == 200
        refused = _get(strict, "/api/exams", host="evil.example", **READER)
        assert refused.status_code == 400 and "trusted_hosts" in refused.text
        assert _get(strict, "/healthz", host="10.0.0.9").status_code == 200  # probes


def test_session_cookie_is_secure_when_the_public_url_is_https(site: Site) -> None:
    with extra_server(site, public_url="https://node.example.org") as proxied:
        signed = httpx.post(f"{proxied}/login", data={"token": READ_TOKEN})
        assert signed.status_code == 303
        assert "secure" in signed.headers["set-cookie"].lower()
    plain = httpx.post(f"{site.base}/login", data={"token": READ_TOKEN})
    assert "secure" not in plain.headers["set-cookie"].lower()


def test_https_of_its_own(site: Site, tmp_path: Path) -> None:
    key, cert = tmp_path / "web.key", tmp_path / "web.crt"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    with extra_server(site, {"https_cert": cert, "https_key": key}) as secured:
        base = secured.replace("http://", "https://")
        trust = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(f"{base}/api/exams", headers=READER, verify=trust)
        assert answer.status_code == 200
        signed = httpx.post(f"{base}/login", data={"token": READ_TOKEN}, verify=trust)
        assert "secure" in signed.headers["set-cookie"].lower()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{secured}/api/exams", headers=READER, timeout=5)  # no plain HTTP


def test_the_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "mammo.db"
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    for name in ("mammo.db", "mammo.db-wal", "mammo.db-shm"):
        file = path.parent / name
        if file.exists():
            assert stat.S_IMODE(os.stat(file).st_mode) == 0o600, name


def test_stow_requests_beyond_the_concurrency_limit_are_told_to_retry(site: Site) -> None:
    import socket

    from tests.helpers.site import ADMIN_TOKEN

    with extra_server(site, {"max_stow_concurrency": 1}) as limited:
        host, port = limited.removeprefix("http://").split(":")
        boundary = "slow-boundary"
        head = (
            "POST /dicomweb/studies HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
            f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n'
            "Content-Length: 100000\r\n\r\n"
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(head.encode())  # ...and the rest of the body never comes

            def refused() -> httpx.Response | None:
                answer = httpx.post(
                    f"{limited}/dicomweb/studies",
                    content=b"--x--\r\n",
                    headers={
                        "Authorization": f"Bearer {ADMIN_TOKEN}",
                        "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
                    },
                    timeout=30,
                )
                return answer if answer.status_code == 503 else None

            answer = wait_for(refused, timeout=10)
            assert answer.headers["retry-after"] == "5"
            assert "STOW-RS requests are being filed" in answer.text
        # the slow client gone, the slot is free again
        wait_for(
            lambda: (
                httpx.post(
                    f"{limited}/dicomweb/studies",
                    content=b"--x--\r\n",
                    headers={
                        "Authorization": f"Bearer {ADMIN_TOKEN}",
                        "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
                    },
                ).status_code
                == 400
            ),
            timeout=10,
        )
