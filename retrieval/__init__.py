"""Retrieval: the HTTP API, clips and evidence packages (issue 4 fills it in)."""
