"""Cut a wheel down to the files a run needs, in place: scripts/gpu-wheels.sh keeps, of the
56 MB cryptography-vectors wheel, the NIST ECDSA files tests/ecdsa_vectors.py reads, so that the
wheels fit the 64 MiB a GPU-machine call carries.

    python3 scripts/trim_wheel.py WHEEL PREFIX [PREFIX ...]

Keeps every entry whose name starts with one of the PREFIXes, and the .dist-info folder with its
RECORD cut to the kept entries (pip installs from RECORD's list).
"""
from __future__ import annotations

import os
import sys
import tempfile
import zipfile


def trim(wheel: str, prefixes: list[str]) -> list[str]:
    """Rewrite ``wheel`` with only the entries under ``prefixes`` (and its metadata); the kept names."""
    with zipfile.ZipFile(wheel) as src:
        infos = src.infolist()
        meta = next(i.filename.split("/")[0] for i in infos if i.filename.split("/")[0].endswith(".dist-info"))
        kept = [i for i in infos if i.filename.startswith(meta + "/") or i.filename.startswith(tuple(prefixes))]
        names = {i.filename for i in kept}
        if not any(n.startswith(tuple(prefixes)) for n in names):
            raise SystemExit(f"{wheel}: nothing under {' '.join(prefixes)}")
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(wheel)), suffix=".whl")
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
                for info in kept:
                    data = src.read(info)
                    if info.filename == f"{meta}/RECORD":
                        lines = data.decode().splitlines()
                        data = "".join(line + "\n" for line in lines if line.split(",")[0] in names).encode()
                    out.writestr(info, data)
            os.chmod(tmp, os.stat(wheel).st_mode)  # not mkstemp's 0600
            os.replace(tmp, wheel)
        except BaseException:
            os.unlink(tmp)
            raise
    return sorted(names)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    print(f"{sys.argv[1]}: kept {len(trim(sys.argv[1], sys.argv[2:]))} entries")
