"""`mammo-node doctor`: one command that says whether the node is healthy, and why not.

Each check is a small function returning :class:`Check` rows (ok, warn or fail, with a detail
that says what to do). They run against the real parts: the database answers and is at the
migration head, the disk has room for the limits, the model bundle's weights match their
sha256 and load, every destination answers C-ECHO, the TLS certificate has not expired, and
the DICOM and HTTP ports are free or held by this node. A check never raises: a failure is a
row, so one broken part does not hide the others.
"""

from __future__ import annotations

import enum
import errno
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from mammo_node.config import Settings
from mammo_node.db.models import Destination, Exam, OutboxItem
from mammo_node.db.session import Database, alembic_config, current_revision
from mammo_node.errors import MammoNodeError

CERT_WARN_DAYS = 30


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail}


def _ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def _warn(name: str, detail: str) -> Check:
    return Check(name, Status.WARN, detail)


def _fail(name: str, detail: str) -> Check:
    return Check(name, Status.FAIL, detail)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- the checks --------------------------------------------------------------------------------
def check_database(settings: Settings) -> Iterator[Check]:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    where = make_url(settings.database_url).render_as_string(hide_password=True)
    db = Database(settings.database_url)
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
    except MammoNodeError as exc:
        yield _fail("database", f"{where} does not answer: {_first_line(exc)}")
        return
    finally:
        db.dispose()
    yield _ok("database", f"{where} answers")
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    try:
        current = current_revision(settings.database_url)
    except Exception as exc:
        yield _fail("migrations", f"cannot read the schema revision: {exc}")
        return
    if current == head:
        yield _ok("migrations", f"at head {head}")
    else:
        yield _fail(
            "migrations",
            f"at {current or 'no schema'}, head is {head}: run `mammo-node db upgrade` "
            "(serve also migrates on start)",
        )


def check_disk(settings: Settings) -> Iterator[Check]:
    import os

    folder = settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent
    try:
        stat = os.statvfs(folder.resolve())
    except OSError as exc:
        yield _fail("disk", f"cannot read free space of {folder}: {exc}")
        return
    free = stat.f_bavail * stat.f_frsize
    minimum = settings.min_free_disk_mb * 1024**2
    text_free = f"{free / 1024**3:.1f} GB free at {folder}"
    if free < minimum:
        yield _fail(
            "disk",
            f"{text_free}, below MAMMO_MIN_FREE_DISK_MB ({settings.min_free_disk_mb} MB): "
            "associations are refused; set a retention limit or add space",
        )
    elif free < 2 * minimum:
        yield _warn(
            "disk", f"{text_free}, less than twice the minimum of {settings.min_free_disk_mb} MB"
        )
    else:
        yield _ok("disk", f"{text_free} (minimum {settings.min_free_disk_mb} MB)")
    if settings.max_storage_gb is not None:
        stored = _stored_bytes(settings)
        limit = settings.max_storage_gb * 1024**3
        if stored is None:
            return
        room = stored + free - minimum
        if room < limit:
            yield _warn(
                "storage limit",
                f"MAMMO_MAX_STORAGE_GB={settings.max_storage_gb} but only "
                f"{room / 1024**3:.1f} GB can be stored before the free-disk minimum",
            )
        elif stored > limit:
            yield _warn(
                "storage limit",
                f"{stored / 1024**3:.2f} GB stored, above the limit of {settings.max_storage_gb} "
                "GB: waiting for exams to be delivered, or on hold",
            )
        else:
            yield _ok("storage limit", f"{stored / 1024**3:.2f} of {settings.max_storage_gb} GB")
    elif settings.retention_days is None:
        yield _warn(
            "retention",
            "no retention limit: nothing is ever deleted and the disk fills; set "
            "MAMMO_RETENTION_DAYS or MAMMO_MAX_STORAGE_GB",
        )


def _stored_bytes(settings: Settings) -> int | None:
    from mammo_node.operations.retention import stored_bytes

    db = Database(settings.database_url)
    try:
        with db.read() as session:
            return stored_bytes(session)
    except MammoNodeError:
        return None
    finally:
        db.dispose()


def check_bundle(settings: Settings) -> Iterator[Check]:
    from mammo_node.ml.bundle import load_bundle
    from mammo_node.ml.loading import bundle_path

    path = bundle_path(settings)
    try:  # an active bundle of the registry (`mammo-node models activate`) wins
        from mammo_node.operations.models import ModelRole, bundle_with_role

        db = Database(settings.database_url)
        try:
            active = bundle_with_role(db, ModelRole.ACTIVE)
        finally:
            db.dispose()
        if active is not None:
            path = active[0]
    except MammoNodeError:
        pass  # the database row reports the database; the configured bundle is checked
    started = time.perf_counter()
    try:
        bundle = load_bundle(path, device="cpu")
    except MammoNodeError as exc:
        yield _fail("model bundle", str(exc))
        return
    except (OSError, RuntimeError, ValueError) as exc:
        yield _fail("model bundle", f"{path}: cannot load: {exc}")
        return
    info = bundle.info
    demo = " (DEMO: trained on synthetic images, not for clinical use)" if info.is_demo else ""
    detail = (
        f"{info.name} {info.version} at {path}: weights match their sha256 and load "
        f"({time.perf_counter() - started:.1f} s); manifest sha256 {bundle.manifest_sha256[:16]}"
        f"{demo}"
    )
    yield _warn("model bundle", detail) if info.is_demo else _ok("model bundle", detail)


def check_destinations(settings: Settings) -> Iterator[Check]:
    from mammo_node.delivery.scu import Peer, echo

    db = Database(settings.database_url)
    try:
        with db.read() as session:
            destinations = [
                (d.name, d.ae_title, d.host, d.port, d.tls, d.config_error)
                for d in session.scalars(
                    select(Destination).where(Destination.enabled).order_by(Destination.name)
                )
            ]
            dead = session.scalar(select(func.count()).where(OutboxItem.state == "dead")) or 0
            failed = session.scalar(select(func.count()).where(Exam.state == "failed")) or 0
    except MammoNodeError as exc:
        yield _fail("destinations", f"cannot list destinations: {_first_line(exc)}")
        return
    finally:
        db.dispose()
    if not destinations:
        yield _warn("destinations", "none: results are only shown on the node's own pages")
    for dest_name, ae_title, host, port, tls, config_error in destinations:
        name = f"destination {dest_name}"
        where = f"{ae_title}@{host}:{port}"
        try:
            context = None
            if tls:
                from mammo_node.receive.scp import build_client_ssl_context

                context = build_client_ssl_context(settings)
            status = echo(Peer(host, port, ae_title, settings.ae_title, context))
        except (MammoNodeError, OSError, ssl.SSLError) as exc:
            yield _fail(name, f"C-ECHO to {where} failed: {exc}")
            continue
        if status != 0:
            yield _fail(name, f"C-ECHO to {where} answered status 0x{status:04X}")
        elif config_error:
            yield _warn(name, f"answers C-ECHO but is paused: {config_error}")
        else:
            yield _ok(name, f"{where} answers C-ECHO")
    if dead:
        yield _warn(
            "outbox", f"{dead} dead delivery(ies): see `mammo-node outbox list --state dead`"
        )
    if failed:
        yield _warn(
            "scoring",
            f"{failed} exam(s) parked as failed: see `mammo-node exams list --state failed`",
        )


def certificate_not_after(path: Path) -> float:
    """The certificate's notAfter as a POSIX time (no third-party X.509 parser needed)."""
    decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return ssl.cert_time_to_seconds(decoded["notAfter"])


def check_tls(settings: Settings) -> Iterator[Check]:
    if settings.tls_cert is None:
        yield _ok("tls", "DICOM TLS off")
        return
    for name, path in (("tls key", settings.tls_key), ("tls ca", settings.tls_ca)):
        if path is not None and not Path(path).is_file():
            yield _fail(name, f"{path} does not exist")
    try:
        not_after = certificate_not_after(settings.tls_cert)
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        yield _fail("tls certificate", f"{settings.tls_cert}: cannot read it: {exc}")
        return
    days = (not_after - time.time()) / 86400
    when = time.strftime("%Y-%m-%d", time.gmtime(not_after))
    if days < 0:
        yield _fail("tls certificate", f"{settings.tls_cert} expired on {when}: peers refuse it")
    elif days < CERT_WARN_DAYS:
        yield _warn("tls certificate", f"{settings.tls_cert} expires on {when} ({days:.0f} days)")
    else:
        yield _ok("tls certificate", f"{settings.tls_cert} valid until {when} ({days:.0f} days)")


def check_ports(settings: Settings) -> Iterator[Check]:
    yield _port("dicom port", settings, settings.port, _answers_echo)
    yield _port("http port", settings, settings.http_port, _answers_http)


def _port(name: str, settings: Settings, port: int, ours: Callable[[Settings, int], bool]) -> Check:
    host = "" if settings.host in ("0.0.0.0", "") else settings.host
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return _fail(name, f"cannot bind {settings.host}:{port}: {exc.strerror or exc}")
        else:
            return _ok(name, f"{settings.host}:{port} free")
    if ours(settings, port):
        return _ok(name, f"{port} in use by this node (it answers)")
    return _fail(
        name, f"{port} is in use by another program: `ss -ltnp 'sport = :{port}'` names it"
    )


def _local(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host


def _answers_echo(settings: Settings, port: int) -> bool:
    from mammo_node.delivery.scu import Peer, echo

    try:
        return echo(Peer(_local(settings), port, settings.ae_title, "MAMMO_DOCTOR")) == 0
    except (MammoNodeError, OSError):
        return False


def _answers_http(settings: Settings, port: int) -> bool:
    try:
        return httpx.get(f"http://{_local(settings)}:{port}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


CHECKS: tuple[Callable[[Settings], Iterator[Check]], ...] = (
    check_database,
    check_disk,
    check_bundle,
    check_destinations,
    check_tls,
    check_ports,
)


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order; a check that breaks unexpectedly becomes a failed row."""
    rows: list[Check] = [_ok("settings", "valid (MAMMO_ variables and flags)")]
    for check in CHECKS:
        try:
            rows.extend(check(settings))
        except Exception as exc:
            rows.append(
                _fail(check.__name__.removeprefix("check_"), f"{type(exc).__name__}: {exc}")
            )
    return rows


def healthy(rows: list[Check]) -> bool:
    return all(row.status is not Status.FAIL for row in rows)
