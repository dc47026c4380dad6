"""mammo_node.web: DICOMweb (STOW-RS, QIDO-RS, WADO-RS), the worklist pages, the JSON API,
/healthz, /readyz and /metrics.

``mammo_node.web.app.create_app(settings, db, ingestor)`` builds the FastAPI app;
``mammo_node.web.server.WebServer`` runs it with uvicorn in a background thread.
"""
