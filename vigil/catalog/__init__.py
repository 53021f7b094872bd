"""The catalog: models (``models``) and the time-index queries (``queries``)."""
