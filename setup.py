"""Builds the optional C accelerator of the CPU Merkle backend (OpenSSL's SHA-256, GIL released).

Without it (no compiler, no libssl headers) Sentry still works: the pure-hashlib reference
path computes the same roots, only slower.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sentry.hashing._cmerkle",
            sources=["sentry/hashing/_cmerkle.c"],
            libraries=["crypto"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
