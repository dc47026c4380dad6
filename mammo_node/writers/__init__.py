"""Result writers: one scored exam -> TID 1500 SRs, saliency Secondary Captures and SEGs, a
Mammography CAD SR (:mod:`~mammo_node.writers.cad_sr`), a presentation state
(:mod:`~mammo_node.writers.gsps`) and, on a rescore, an IOCM rejection note
(:mod:`~mammo_node.writers.iocm`).

Pure functions of pydicom Datasets (no database, network or files). The worker calls
:func:`build_outputs`; the exporter asks :func:`sop_classes_for_outputs` for its presentation
contexts. The exam report (``OutputKind.SR``) is the primary result; why each view also gets a
report of its own is explained in :mod:`mammo_node.writers.sr`.

Importing the package puts a memoised IOD lookup in place in highdicom
(:mod:`~mammo_node.writers.iod_lookups`): the same answers, about 0.1 s less per exam.
"""

from mammo_node.writers import iod_lookups
from mammo_node.writers.identity import OutputKind, ReferencedDocument, output_uid
from mammo_node.writers.outputs import OutputObject, build_outputs, sop_classes_for_outputs
from mammo_node.writers.sr import ReportReading, read_report

iod_lookups.install()

__all__ = [
    "OutputKind",
    "OutputObject",
    "ReferencedDocument",
    "ReportReading",
    "build_outputs",
    "output_uid",
    "read_report",
    "sop_classes_for_outputs",
]
