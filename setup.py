"""Builds the optional C accelerator of the CPU Merkle backend (OpenSSL's SHA-256, GIL released),
and ships the repository's top-level data inside the package: kernels/ as
sentry/hashing/kernels/ and cufile.json as sentry/io/cufile.json.

Without the accelerator (no compiler, no libssl headers) Sentry still works: the pure-hashlib
reference path computes the same roots, only slower. The reason it was skipped is kept in
sentry/hashing/_cmerkle.skipped, which `sentry doctor` prints.
"""
import os
import shutil
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# Top-level path -> where it goes in the package. A build-time copy, not a symlink or a second
# copy in git: kernels/ stays where the docs, the g++ host harness, docker-compose and the tests
# use it; a checkout (or an editable install) reads both in place (sentry/_gpu.py, io/kvikio.py).
PACKAGE_DATA = {"kernels": "sentry/hashing/kernels", "cufile.json": "sentry/io/cufile.json"}
SKIPPED_NOTE = "_cmerkle.skipped"


class build_py_with_data(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads kernels/ and cufile.json in place, from the checkout
        for src, dst in PACKAGE_DATA.items():
            out = os.path.join(self.build_lib, dst)
            self.mkpath(os.path.dirname(out))  # the package's directory may not be built yet
            (self.copy_tree if os.path.isdir(src) else self.copy_file)(src, out)


class build_ext_with_reason(build_ext):
    """The accelerator is optional: when it cannot be built, leave a note saying why."""

    def _note(self, ext) -> str:
        """Beside the extension in the build directory (setuptools builds there, also for --inplace)."""
        filename = self.get_ext_filename(self.get_ext_fullname(ext.name))
        return os.path.join(self.build_lib, os.path.dirname(filename), SKIPPED_NOTE)

    def build_extension(self, ext):
        note = self._note(ext)
        try:
            super().build_extension(ext)
        except Exception as exc:
            os.makedirs(os.path.dirname(note), exist_ok=True)
            with open(note, "w") as f:
                f.write(self._why(exc) + "\n")
            raise  # setuptools reports it and goes on without the optional extension
        if os.path.exists(note):
            os.remove(note)

    def copy_extensions_to_source(self):
        """--inplace and editable installs: the note goes (or goes away) beside the sources too."""
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            note, package = self._note(ext), ext.name.rpartition(".")[0]
            inplace = os.path.join(build_py.get_package_dir(package), SKIPPED_NOTE)
            if os.path.exists(note):
                self.copy_file(note, inplace)
            elif os.path.exists(inplace):
                os.remove(inplace)

    def _why(self, exc) -> str:
        compiler = getattr(self.compiler, "compiler_so", None) or ["cc"]
        if shutil.which(compiler[0]) is None:
            return f"no C compiler ({compiler[0]}) at build time"
        if not self._compiles("int main(void) { return 0; }\n"):
            return f"the C compiler ({compiler[0]}) does not work"
        if not self._compiles("#include <openssl/sha.h>\nint main(void) { return 0; }\n"):
            return "no OpenSSL headers (openssl/sha.h: libssl-dev or openssl-devel) at build time"
        return f"the build failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"

    def _compiles(self, code: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(code)
            try:
                self.compiler.compile([src], output_dir=tmp, include_dirs=self.include_dirs)
            except Exception:
                return False
        return True


setup(
    cmdclass={"build_py": build_py_with_data, "build_ext": build_ext_with_reason},
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
