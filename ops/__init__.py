"""Operations: the embedded stack, the `vigil` CLI and the `make run` supervisor."""
