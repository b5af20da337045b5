"""Zip archives of ECG files, expanded safely into a private temporary folder.

Limits: at most MAX_MEMBERS files, MAX_TOTAL_BYTES uncompressed in all, no member expanding more
than MAX_RATIO times (zip bombs); names that climb out of the folder (`../`), absolute names,
symbolic links and encrypted members are refused. Sizes are enforced while extracting, not only
from the (forgeable) sizes in the archive's directory. The caller removes the folder.
"""
from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import ECGReadError
from .record import read_error

MAX_MEMBERS = 200
MAX_TOTAL_BYTES = 200_000_000
MAX_RATIO = 100  # uncompressed / compressed, per member larger than RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1_000_000
_CHUNK = 1 << 20


def looks_like_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _ignored(parts: tuple[str, ...]) -> bool:
    """Folders and files that archivers add and that are never ECGs (macOS, hidden files)."""
    return any(p == "__MACOSX" or p.startswith(".") for p in parts) or parts[-1] in ("Thumbs.db",
                                                                                    "desktop.ini")


def extract(path: Path, dest: Path) -> list[Path]:
    """Extract the members of the zip `path` into `dest` (flat names kept in sub-folders)."""
    fname = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError):
        raise read_error(fname, "this is not a readable zip archive (corrupt or truncated).") from None
    out: list[Path] = []
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise read_error(fname, f"the archive holds {len(infos)} files, more than the {MAX_MEMBERS} "
                               "allowed.")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_TOTAL_BYTES:
            raise read_error(fname, f"the archive expands to {declared / 1e6:.0f} MB, more than the "
                               f"{MAX_TOTAL_BYTES / 1e6:.0f} MB allowed.")
        total = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            posix = PurePosixPath(name)
            if (name.startswith("/") or posix.is_absolute() or ".." in posix.parts
                    or (len(name) > 1 and name[1] == ":")):
                raise read_error(fname, f"the archive holds a file with an unsafe path ({name}).")
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise read_error(fname, f"the archive holds a symbolic link ({name}), which is not allowed.")
            if info.flag_bits & 0x1:
                raise read_error(fname, "the archive is encrypted.")
            parts = tuple(p for p in posix.parts if p not in ("", "."))
            if not parts or _ignored(parts):
                continue
            if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
                raise read_error(fname, f"the archive holds a file whose name is too long "
                                   f"({parts[-1][:40]}...).")
            if (info.file_size > RATIO_MIN_BYTES
                    and info.file_size > MAX_RATIO * max(1, info.compress_size)):
                raise read_error(fname, f"the archive member {parts[-1]} expands {info.file_size / max(1, info.compress_size):.0f} "
                                   "times, which looks like a zip bomb.")
            target = dest.joinpath(*parts)
            if target.exists():
                raise read_error(fname, f"the archive holds {'/'.join(parts)} twice.")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # a member named like the folder of another
                raise read_error(fname, f"the archive holds {'/'.join(parts[:-1])} both as a file "
                                   "and as a folder.") from None
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while True:
                        chunk = src.read(_CHUNK)
                        if not chunk:
                            break
                        written += len(chunk)
                        total += len(chunk)
                        if written > info.file_size or total > MAX_TOTAL_BYTES:
                            raise read_error(fname, "the archive expands to more than it declares or "
                                               "than is allowed, which looks like a zip bomb.")
                        if (written > RATIO_MIN_BYTES
                                and written > MAX_RATIO * max(1, info.compress_size)):
                            raise read_error(fname, f"the archive member {parts[-1]} expands more than "
                                               f"{MAX_RATIO} times, which looks like a zip bomb.")
                        dst.write(chunk)
            except ECGReadError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
                    zlib.error, lzma.LZMAError, ValueError):
                raise read_error(fname, f"the archive member {parts[-1]} cannot be extracted "
                                   "(corrupt, or compressed in an unsupported way).") from None
            out.append(target)
    return out
