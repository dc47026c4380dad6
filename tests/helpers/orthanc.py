"""A real Orthanc (Debian package) on loopback ports, as the PACS in tests and benchmarks."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


class Orthanc:
    def __init__(
        self,
        workdir: Path,
        dicom_port: int,
        http_port: int,
        *,
        aet: str = "ORTHANC",
        plugins: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.aet = aet
        self.plugins = plugins or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        binary = shutil.which("Orthanc")
        if binary is None:
            raise AssertionError("Orthanc not installed: `make test` installs it (apt orthanc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "mammo-node-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowFind": True,  # a PACS answers the node's delivery checks
            "Plugins": self.plugins,
        }
        (self.workdir / "orthanc.json").write_text(json.dumps(config))
        log = (self.workdir / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(
            ["Orthanc", str(self.workdir / "orthanc.json")], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError((self.workdir / "orthanc.log").read_text()) from None
                time.sleep(0.2)
        raise AssertionError("Orthanc did not start within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return bytes(response.read())

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance's main tags for a StudyInstanceUID."""
        body = json.dumps(
            {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        ).encode()
        request = urllib.request.Request(self.url + "/tools/find", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return list(json.loads(response.read()))
