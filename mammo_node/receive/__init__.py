"""Receive: the DICOM Storage SCP (pynetdicom) that modalities and PACS push to.

``scp`` (AE, presentation contexts, TLS, C-STORE/C-ECHO handlers returning status codes),
``peers`` (the calling-AE / host allow-list), ``chunked`` (datasets streamed into the store's
temp folder). DICOMweb STOW-RS is received in :mod:`mammo_node.web.dicomweb`; both hand every
instance to :mod:`mammo_node.filing.ingest`.
"""
