"""Readers of bytes: POSIX files, kvikio (GPUDirect Storage), tar and Parquet layouts."""

__all__: list[str] = []
