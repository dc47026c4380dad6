"""The paper's model core, shared by the node (worker) and the trainer. Pure: no database,
network, or files other than the ones it is handed.

- ``preprocess``: DICOM pixels -> model input, with the ``Geometry`` back to stored pixels;
- ``models``: ``build_model`` (ResNet 18/34/50/101, 1-channel stem, 2 outputs);
- ``saliency``: risk score, input-gradient saliency, centre of attention (COA);
- ``roi``: the attention model's crop around the COA at higher resolution;
- ``scoring``: ensemble / breast / exam rules and the radiologist baselines;
- ``bundle``: model bundles (manifest + safetensors, sha256-verified);
- ``inference``: ``EnsembleScorer`` (views and exams -> ``ViewInference`` / ``ExamInference``).
"""
