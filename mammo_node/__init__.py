"""mammo-node: a DICOM node for breast-cancer screening.

Receives mammograms (C-STORE, STOW-RS), files them into 4-view exams, scores each exam with
the Holistic + Attention ensemble of Dahl et al. and sends results back as DICOM objects.
"""

__version__ = "0.1.0"
