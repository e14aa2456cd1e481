"""Builds the optional C accelerator of the CPU Merkle backend (OpenSSL's SHA-256, GIL released),
and ships the CUDA sources of kernels/ inside the package (as sentry/hashing/kernels/).

Without the accelerator (no compiler, no libssl headers) Sentry still works: the pure-hashlib
reference path computes the same roots, only slower.
"""
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class build_py_with_kernels(build_py):
    """Copies kernels/ (top level, where the tests build them) into built wheels; an editable or
    source checkout reads kernels/ in place (sentry/hashing/kernel_source.py)."""

    def run(self):
        super().run()
        self.copy_tree("kernels", os.path.join(self.build_lib, "sentry", "hashing", "kernels"))


setup(
    cmdclass={"build_py": build_py_with_kernels},
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
