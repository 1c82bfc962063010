"""The visual search service: an HTTP API and a web page in front of Triton and a catalog.

``shopvision api`` runs it (FastAPI on uvicorn); :func:`shopvision.api.app.create_app` builds it.
Needs the ``api`` extra (and ``catalog`` or ``milvus`` for search).
"""
