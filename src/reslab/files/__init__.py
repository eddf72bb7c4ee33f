"""Files: atomic writes, digests, the one cache folder, checked downloads, safe extraction.

The bottom room: every other part of reslab writes, hashes, caches and downloads through it,
and it imports nothing from reslab.
"""

from reslab.files.archive import extract_archive
from reslab.files.atomic import (
    NotAFileError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_replaceable,
    file_kind,
    fsync_dir,
    is_temp_file,
    sweep_temp_files,
)
from reslab.files.cache import (
    ARRAY_CACHE_FORMAT,
    CACHE_ENV,
    DamagedCacheError,
    cache_dir,
    cache_key,
    read_array_cache,
    write_array_cache,
)
from reslab.files.digest import file_digest, file_sha256
from reslab.files.download import DownloadError, download
from reslab.files.jsonable import to_jsonable
from reslab.files.lock import FolderBusy, FolderLock, FolderLockError
from reslab.files.paths import OutputPathError, check_output_dir, check_output_file

__all__ = [
    "ARRAY_CACHE_FORMAT",
    "CACHE_ENV",
    "DamagedCacheError",
    "DownloadError",
    "FolderBusy",
    "FolderLock",
    "FolderLockError",
    "NotAFileError",
    "OutputPathError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cache_dir",
    "cache_key",
    "check_replaceable",
    "check_output_dir",
    "check_output_file",
    "download",
    "extract_archive",
    "file_digest",
    "file_kind",
    "file_sha256",
    "fsync_dir",
    "is_temp_file",
    "read_array_cache",
    "sweep_temp_files",
    "to_jsonable",
    "write_array_cache",
]
