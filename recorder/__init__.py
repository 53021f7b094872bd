"""Ingest: cameras, recording into sealed chunks, upload, health (issue 3 fills it in)."""
