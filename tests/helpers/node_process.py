"""`mammo-node serve` as a real child process (for kill -9 and CLI tests)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers.tools import dcmtk, free_port, wait_for


class NodeProcess:
    """`mammo-node serve` as a real child process."""

    def __init__(self, data_dir: Path, *, db_url: str | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.db_url = db_url
        self.env = {
            **os.environ,
            "MAMMO_QUIET_SECONDS": "0.5",
            "MAMMO_STABLE_SECONDS": "3",
            "MAMMO_GROUPING_INTERVAL": "0.1",
            "MAMMO_MIN_FREE_DISK_MB": "0",
            "MAMMO_PRIOR_AFTER_DAYS": "0",  # test data carries historical study dates
            "MAMMO_HOST": "127.0.0.1",
            # tests run niced beside other jobs, where a scoring process another +10 below
            # them waits for minutes; the priority tests (test_worker_priority) set their own
            "MAMMO_WORKER_NICE": "0",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def cli(
        self, *args: str, check: bool = True, data: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `mammo-node ARGS` (with this node's --data-dir / --db-url when ``data``)."""
        extra = ["--data-dir", str(self.data_dir)] if data else []
        if data and self.db_url:
            extra += ["--db-url", self.db_url]
        run = subprocess.run(
            [str(Path(os.sys.executable).parent / "mammo-node"), *args, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )
        if check and run.returncode != 0:
            raise AssertionError(f"mammo-node {' '.join(args)} failed:\n{run.stderr}")
        return run

    def start(self) -> NodeProcess:
        extra = ["--db-url", self.db_url] if self.db_url else []
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(os.sys.executable).parent / "mammo-node"),
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    "--http-port",
                    str(self.http_port),
                    "--ae-title",
                    "MAMMO_NODE",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        wait_for(self._answers_echo, timeout=90, interval=0.3)
        return self

    def _answers_echo(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"node exited with {self.proc.returncode}:\n{self.log.read_text()}"
            )
        run = subprocess.run(
            [dcmtk("echoscu"), "-to", "2", "-aec", "MAMMO_NODE", "127.0.0.1", str(self.port)],
            capture_output=True,
            timeout=30,
        )
        return run.returncode == 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(timeout=60)
