"""Vigil's shared kernel: settings, the catalog, the object store, auth and audit.

Both bounded contexts, ``recorder`` (ingest) and ``retrieval`` (API, clips,
evidence), build on this package and on nothing of each other's internals.
"""

__version__ = "0.1.0"
