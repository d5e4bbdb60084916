"""One filesystem layer for local paths and object-store URIs (`s3://bucket/prefix`, `gs://bucket/prefix`).

Built on `pyarrow.fs`: Ray Train (`RunConfig(storage_filesystem=...)`) and Ray Data (`filesystem=`) take
its filesystems as they are, it comes with Ray (no extra package), and its S3 client reads the standard
environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
instance roles); GCS reads `GOOGLE_APPLICATION_CREDENTIALS` or the VM's service account. (fsspec's s3fs
would pin aiobotocore, and through it botocore, against the boto3 MLflow uses.)

A location is a `str` or `Path`: a URI of a supported scheme, or a local path. Writes never leave half a
file that looks whole: locally a temporary name is renamed over the target; an object appears in a bucket
only once its upload completed (a folder of several objects marks itself complete with a manifest
written last, see `recfound.train.manifest`).
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from recfound.data.atomic import atomic_write_bytes
from recfound.error_chain import first_line

if TYPE_CHECKING:
    import pyarrow.fs

Location = str | Path
SCHEMES = ("s3", "gs")


CHECK_ACCESS = ("check the bucket name, the credentials (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS) and "
                "AWS_ENDPOINT_URL")
# What a store's error says (pyarrow's S3 and GCS wordings) when it cannot be reached or has no credentials,
# and when it refuses the credentials given.
# (S3 says INTERNAL_FAILURE without credentials, but also for a passing server error: a hint, not a stop.)
UNREACHABLE = ("NETWORK_CONNECTION", "Could not connect", "OAuth2")
DENIED = ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
          "SignatureDoesNotMatch", "INTERNAL_FAILURE")
GCS_CHECK_S = 20


class StorageError(OSError):
    """An object store refused or failed an operation (one line: the location and the store's reason)."""


def scheme(location: Location) -> str | None:
    """'s3' or 'gs' for a URI of a supported store, None for a local path; ValueError for another scheme."""
    text = str(location)
    if "://" not in text:
        if re.match(r"(s3|gs|gcs):/?[^/]", text, re.IGNORECASE):  # "s3:/bucket/key" would be a local folder "s3:"
            raise ValueError(f"{text}: a storage URI takes two slashes ({text.split(':', 1)[0]}://bucket/prefix)")
        return None
    name = text.split("://", 1)[0].lower()
    if name == "gcs":
        return "gs"
    if name not in SCHEMES:
        raise ValueError(f"{text}: unsupported storage scheme {name!r}; use a local path, s3://bucket/prefix "
                         "or gs://bucket/prefix")
    return name


def is_remote(location: Location) -> bool:
    """True for an object-store URI."""
    return scheme(location) is not None


def normalize(location: Location) -> str:
    """The canonical text of a location: a URI without a trailing slash, or an absolute local path with its
    symbolic links resolved (what two names of one place compare equal by)."""
    if is_remote(location):
        rest = str(location).split("://", 1)[1]
        bucket_and_key = "/".join(part for part in rest.split("/") if part)
        if not bucket_and_key:
            raise ValueError(f"{location}: a storage URI needs a bucket (s3://bucket/prefix)")
        return f"{scheme(location)}://{bucket_and_key}"
    return str(Path(location).resolve())


def join(location: Location, *parts: str) -> str:
    """`location/part/...` (URIs with '/', local paths with the OS separator)."""
    if is_remote(location):
        return "/".join([normalize(location), *(str(part).strip("/") for part in parts)])
    return str(Path(location, *parts))


def basename(location: Location) -> str:
    """The last component of a location."""
    return PurePosixPath(normalize(location).split("://", 1)[-1]).name if is_remote(location) else Path(location).name


def parent(location: Location) -> str:
    """The location one level up (a bucket is its own parent, as / is)."""
    if is_remote(location):
        head, _, rest = normalize(location).partition("://")
        return f"{head}://{rest.rsplit('/', 1)[0]}"
    return str(Path(location).parent)


@lru_cache(maxsize=16)
def _remote_filesystem(uri_root: str, endpoint: str | None) -> pyarrow.fs.FileSystem:
    """The filesystem of one bucket (`endpoint`: the AWS_ENDPOINT_URL it was opened with, part of the key so
    that a changed endpoint opens it again)."""
    import pyarrow.fs

    try:
        filesystem, bucket = pyarrow.fs.FileSystem.from_uri(uri_root)
        # GCS retries a failing request for 15 minutes (right for the run's uploads), which looks like a hang
        # when there are no credentials to find: the bucket check gives up after GCS_CHECK_S.
        probe = pyarrow.fs.GcsFileSystem(retry_time_limit=timedelta(seconds=GCS_CHECK_S)) \
            if uri_root.startswith("gs://") else filesystem
    except (OSError, ValueError) as err:
        raise StorageError(f"{uri_root}: cannot open the object store ({first_line(err)}); {CHECK_ACCESS}") from None
    try:  # once per bucket and process: a missing one is named here, not as a missing file later
        missing = probe.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound
    except OSError as err:
        if _says(err, UNREACHABLE):
            raise StorageError(f"{uri_root}: cannot reach the object store ({first_line(err)}); "
                               f"{CHECK_ACCESS}") from None
        missing = False  # credentials for objects only may not look at the bucket: the operations will tell
    if missing:
        raise StorageError(f"{uri_root}: no such bucket; {CHECK_ACCESS}")
    return filesystem


def resolve(location: Location) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path inside it) of a location; the path is what pyarrow, Ray Train and Ray Data take
    together with that filesystem."""
    import pyarrow.fs

    if not is_remote(location):
        return pyarrow.fs.LocalFileSystem(), normalize(location)
    uri = normalize(location)
    bucket_root = "/".join(uri.split("/")[:3])  # s3://bucket
    return _remote_filesystem(bucket_root, os.environ.get("AWS_ENDPOINT_URL")), uri.split("://", 1)[1]


def _says(err: BaseException, words: tuple[str, ...]) -> bool:
    return any(word in str(err) for word in words)


def _store_error(location: Location, what: str, err: BaseException) -> StorageError:
    reason = first_line(err)
    hint = f"; {CHECK_ACCESS}" if _says(err, UNREACHABLE + DENIED) else ""
    return StorageError(f"{location}: cannot {what} ({reason}){hint}")


def _info(location: Location):
    filesystem, path = resolve(location)
    try:
        return filesystem.get_file_info(path)
    except OSError as err:
        raise _store_error(location, "look it up", err) from None


def exists(location: Location) -> bool:
    """A file, or a folder (on an object store: a prefix with at least one object under it)."""
    import pyarrow.fs

    return _info(location).type != pyarrow.fs.FileType.NotFound


def is_file(location: Location) -> bool:
    import pyarrow.fs

    return _info(location).type == pyarrow.fs.FileType.File


def is_dir(location: Location) -> bool:
    import pyarrow.fs

    return _info(location).type == pyarrow.fs.FileType.Directory


def list_names(location: Location) -> list[str]:
    """The names directly inside a folder, sorted; [] when there is no such folder."""
    import pyarrow.fs

    filesystem, path = resolve(location)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise _store_error(location, "list it", err) from None
    return sorted(PurePosixPath(info.path).name for info in infos)


def size(location: Location) -> int:
    """The size of a file in bytes (FileNotFoundError when there is none, IsADirectoryError for a folder)."""
    import pyarrow.fs

    info = _info(location)
    if info.type == pyarrow.fs.FileType.Directory:
        raise IsADirectoryError(f"{location}: a folder, not a file")
    if info.size is None:
        raise FileNotFoundError(f"{location}: no such file")
    return info.size


def stamp(location: Location) -> str:
    """A file's size and modification time (ns): what changes when the file is written again."""
    import pyarrow.fs

    info = _info(location)
    if info.type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"{location}: no such file")
    return f"{info.size}:{info.mtime_ns}"


def file_sizes(location: Location) -> dict[str, int]:
    """{path relative to the folder (posix): size} of every file under a folder, however deep; {} for none."""
    import pyarrow.fs

    filesystem, path = resolve(location)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as err:
        raise _store_error(location, "list it", err) from None
    return {PurePosixPath(info.path).relative_to(PurePosixPath(path)).as_posix(): info.size
            for info in infos if info.type == pyarrow.fs.FileType.File}


def read_bytes(location: Location) -> bytes:
    """The whole content of a file (FileNotFoundError when there is none)."""
    if not is_remote(location):
        return Path(location).read_bytes()
    if not is_file(location):
        raise FileNotFoundError(f"{location}: no such file")
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except OSError as err:
        raise _store_error(location, "read it", err) from None


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def folder_error(location: Location) -> IsADirectoryError:
    return IsADirectoryError(f"{location}: is a folder; give the name of a file (inside it, say)")


def refuse_folder(location: Location) -> None:
    """IsADirectoryError when a file is about to be written where a folder is: in a bucket the object would
    hide the folder's files from every listing (`write_bytes` checks only on disk: two more requests per
    object-store write would slow every upload)."""
    if is_dir(location):
        raise folder_error(location)


def write_bytes(location: Location, data: bytes) -> None:
    """Write a whole file: locally through a renamed temporary file, on a store as one upload (an object is
    visible only once complete)."""
    if not is_remote(location):
        if Path(location).is_dir():
            raise folder_error(location)
        atomic_write_bytes(location, data)
        return
    filesystem, path = resolve(location)
    try:
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
    except OSError as err:
        raise _store_error(location, "write it", err) from None


def upload(local: Path | str, location: Location, last: str | None = None) -> None:
    """Copy a local file or folder tree to a location (each file whole). `last`: the path (relative to the
    folder) of the file, or folder, copied after every other one: what marks the copy complete."""
    local = Path(local)
    if not local.is_dir():
        write_bytes(location, local.read_bytes())
        return
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if last is not None:
        files.sort(key=lambda p: p.relative_to(local).is_relative_to(last))  # stable: the rest keep their order
    for item in files:
        write_bytes(join(location, *item.relative_to(local).parts), item.read_bytes())


def download(location: Location, local: Path | str) -> Path:
    """Copy a file or a folder tree at `location` to the local path `local` (each file replaced whole; other
    files already in `local` stay)."""
    local = Path(local)
    if not is_remote(location):
        source = Path(location)
        if source.is_dir():
            shutil.copytree(source, local, dirs_exist_ok=True)
        else:
            atomic_write_bytes(local, source.read_bytes())
        return local
    if is_file(location):
        atomic_write_bytes(local, read_bytes(location))
        return local
    files = file_sizes(location)
    if not files:
        raise FileNotFoundError(f"{location}: no such file or folder")
    for relative in files:
        download(join(location, relative), local.joinpath(*PurePosixPath(relative).parts))
    return local


def delete(location: Location) -> None:
    """Remove a file or a folder tree (nothing when there is none)."""
    if not is_remote(location):
        path = Path(location)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return
    filesystem, path = resolve(location)
    if "/" not in path:  # pyarrow empties the bucket before it refuses to delete it
        raise ValueError(f"{location}: refusing to delete a whole bucket; name a prefix inside it")
    try:
        if is_dir(location):
            filesystem.delete_dir(path)
        elif is_file(location):
            filesystem.delete_file(path)
    except OSError as err:
        raise _store_error(location, "delete it", err) from None
