"""Manifests: what is hashed (items), how it is signed (predicates, sidecars) and compared."""

__all__: list[str] = []
