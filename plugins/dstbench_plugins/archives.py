"""Published archives of datasets and corrupted test sets (tar, compressed or not, and zip): download (resumable,
with a progress bar), checksum, safe unpacking.

`fetch(archive, root, reporter)` leaves the archive's files in `root/archive.folder` and deletes the archive. A
broken download resumes from its `.part` file (HTTP Range); an archive whose publisher gives an md5 sum is checked
against it before anything is unpacked; one without (ImageNet-3DCC's .tar.gz) is read through gzip first, whose
CRC-32 and length at the end of the stream reject a damaged or cut-short file. A fresh download that fails its check
is deleted; an archive found in place that fails it is kept and named.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dstbench.data.sources import describe, one_at_a_time
from dstbench.errors import UserError

if TYPE_CHECKING:
    from dstbench.report import Reporter

DOWNLOAD_CHUNK = 1 << 20  # bytes read between progress updates
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Archive:
    """A published archive: where to fetch it, its md5 sum (None where none is published), the folder its files
    belong in, and the names its content folder holds (files or folders, e.g. the corruptions' folders): how that
    folder is recognised inside the archive, whatever it is called there, and how to tell it was unpacked."""

    url: str
    md5: str | None
    folder: str
    holds: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return PurePosixPath(urllib.parse.urlparse(self.url).path).name


def fetch(archive: Archive, root: Path, reporter: Reporter) -> None:
    """Download `archive` into `root` (resuming a broken download from its `.part` file), check it and unpack it
    into `root/archive.folder`. The archive is deleted once unpacked. Processes sharing the root take turns; one
    that waited finds the work done."""
    with one_at_a_time(root, archive.file_name, reporter):
        if not all((root / archive.folder / name).exists() for name in archive.holds):
            _fetch(archive, root, reporter)


def _fetch(archive: Archive, root: Path, reporter: Reporter) -> None:
    tar = root / archive.file_name
    for stale in root.glob(f".{archive.file_name}.*"):  # the scratch folder of an unpacking that was killed
        shutil.rmtree(stale, ignore_errors=True)
    if not tar.exists():
        part = tar.with_name(f"{tar.name}.part")
        root.mkdir(parents=True, exist_ok=True)
        unchecked = "" if archive.md5 else " (no checksum is published for it: gzip's CRC-32 checks it)"
        reporter.info(f"downloading {archive.url} into {root}{unchecked}")
        try:
            download(archive.url, part, reporter)
        except UserError as exc:  # say how to do without the network, too
            raise UserError(f"{exc}; or fetch it elsewhere, put it at {tar} and run again") from None
        if problem := damage(part, archive):
            part.unlink()
            raise UserError(
                f"{archive.url} arrived with {problem}; the download was deleted, run again to download it afresh"
            )
        os.replace(part, tar)
    elif problem := damage(tar, archive):  # an earlier unpacking was interrupted, or someone put a file there
        raise UserError(f"{tar} has {problem}: it is another or a damaged file; move it away and run again")
    unpack(tar, root, archive, reporter)
    tar.unlink()


def damage(path: Path, archive: Archive) -> str | None:
    """What is wrong with a downloaded archive, or None: an md5 sum other than the published one or, where none is
    published, a gzip stream that fails the CRC-32 or length at its end. (tar stops reading at its end-of-archive
    blocks, before them, so a flipped bit in a file's data would otherwise go unnoticed.)"""
    if archive.md5 is not None:
        actual = md5sum(path)
        return None if actual == archive.md5 else f"md5 {actual}, not the published {archive.md5} of {archive.url}"
    try:
        with gzip.open(path) as stream:
            while stream.read(DOWNLOAD_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return f"a damaged gzip stream ({describe(exc)})"
    return None


def download(url: str, part: Path, reporter: Reporter) -> None:
    """Fetch `url` into `part`, continuing after the bytes already there (HTTP Range) when the server allows it."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if response.status != 206:  # the server sends the whole file
                start = 0
            elif not (sent := response.headers.get("Content-Range", "")).startswith(f"bytes {start}-"):
                raise UserError(
                    f"{url} answered a resume from byte {start:,} with {sent or 'no Content-Range'!r}; delete {part} "
                    "and run again"
                )
            length = int(response.headers.get("Content-Length", -1))
            _check_space(part, length, start)
            received = _receive(response, part, start, length, reporter)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is complete
            return
        raise UserError(f"downloading {url} failed ({describe(exc)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"downloading {url} failed ({describe(exc)}); run again to resume") from None
    if length >= 0 and received != length:
        raise UserError(
            f"downloading {url} broke off after {start + received:,} of {start + length:,} bytes; run again to resume"
        )


def _check_space(part: Path, length: int, start: int) -> None:
    """Refuse a download that cannot fit: the rest of the archive, and as much again to unpack it."""
    free = shutil.disk_usage(part.parent).free
    if length >= 0 and 2 * length + start > free:
        raise UserError(
            f"{part.parent} has {free / 1e9:.1f} GB free; {part.name.removesuffix('.part')} needs "
            f"{(2 * length + start) / 1e9:.1f} GB to download and unpack; free some space or set DSTBENCH_DATA to "
            "another disk"
        )


def _receive(response: http.client.HTTPResponse, part: Path, start: int, length: int, reporter: Reporter) -> int:
    """Append the response body to `part` from byte `start` on, with a progress bar; the bytes received."""
    received = 0
    description = f"downloading {part.name.removesuffix('.part')}"
    with open(part, "ab" if start else "wb") as file, reporter.task(description, start + max(length, 0), "B") as task:
        task.advance(start)
        while chunk := response.read(DOWNLOAD_CHUNK):
            file.write(chunk)
            received += len(chunk)
            task.advance(len(chunk))
    return received


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(DOWNLOAD_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(tar: Path, root: Path, archive: Archive, reporter: Reporter) -> None:
    """Extract `tar` (a tar, compressed or not, or a zip) in a scratch folder inside `root`, with a progress bar over
    the archive's bytes; find the folder holding any of `archive.holds` (the scratch folder itself or one up to two
    levels down) and move its entries into `root/archive.folder`, so an interrupted extraction leaves nothing
    half-unpacked there. Entries already there (unpacked before) are kept. Members that are links, devices or would
    land outside the scratch folder are refused."""
    target = root / archive.folder
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{tar.name}.") as scratch:
        try:
            with reporter.task(f"unpacking {tar.name} into {target}", tar.stat().st_size, "B") as task:
                (_unzip if zipfile.is_zipfile(tar) else _untar)(tar, Path(scratch), task.advance)
        except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise UserError(f"cannot unpack {tar} ({describe(exc)}); delete it and download it again") from None
        content = _content_folder(Path(scratch), archive.holds)
        if content is None:
            raise UserError(f"{tar} holds none of {', '.join(archive.holds)}; is it the right archive?")
        target.mkdir(exist_ok=True)
        for entry in content.iterdir():
            if not (target / entry.name).exists():
                os.replace(entry, target / entry.name)


def _untar(tar: Path, scratch: Path, advance: Callable[[int], None]) -> None:
    """One pass through the (possibly compressed) stream, advancing by the archive's bytes read."""
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with open(tar, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as opened:
        done = 0
        for member in opened:
            _check_member(member.name, member.isfile() or member.isdir(), tar)
            opened.extract(member, scratch, **extra)
            opened.members.clear()  # tarfile keeps every member it read: a million for ImageNet-C's
            advance(raw.tell() - done)
            done = raw.tell()


def _unzip(path: Path, scratch: Path, advance: Callable[[int], None]) -> None:
    """Every member in turn, advancing by its compressed size (the bar ends short by the zip's directory)."""
    with zipfile.ZipFile(path) as opened:
        for member in opened.infolist():
            kind = member.external_attr >> 28  # the Unix file type, where the zip was made on Unix
            _check_member(member.filename, kind in (0, 0o4, 0o10), path)
            opened.extract(member, scratch)
            advance(member.compress_size)


def _content_folder(scratch: Path, holds: Sequence[str]) -> Path | None:
    level = [scratch]
    for _ in range(3):
        for folder in level:
            if any((folder / name).exists() for name in holds):
                return folder
        level = [sub for folder in level for sub in sorted(folder.iterdir()) if sub.is_dir()]
    return None


def _check_member(name: str, plain: bool, archive: Path) -> None:
    """Refuse a member that is a link or device (not `plain`) or would land outside the folder it is unpacked in."""
    path = PurePosixPath(name)
    if not plain or path.is_absolute() or ".." in path.parts:
        raise UserError(f"{archive} holds '{name}', which is not a plain file inside the archive; refusing it")
