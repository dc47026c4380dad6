"""`mammo-node`: run the node and look after it.

One module per command group, all adding to :data:`mammo_node.cli.app.app`.
"""

from __future__ import annotations

from mammo_node.cli import audit, data, delivery, exams, network, run  # noqa: F401  (registers)
from mammo_node.cli import backup as _backup  # noqa: F401  (registers)
from mammo_node.cli import doctor as _doctor  # noqa: F401  (registers)
from mammo_node.cli import models as _models  # noqa: F401  (registers)
from mammo_node.cli import outcomes as _outcomes  # noqa: F401  (registers)
from mammo_node.cli import storage as _storage  # noqa: F401  (registers)
from mammo_node.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
