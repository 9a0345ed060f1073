"""How a path is reached: one small Storage interface for local disks and cluster URIs.

Local paths go through the os module; URIs with a scheme (hdfs://, s3a://, file://)
through Hadoop's FileSystem API of the running Spark session (HadoopStorage), or through
pyarrow.fs in processes without Spark (ArrowStorage: publish, the trainer's reader).

A local path becomes a URL in one place (`file_url`, undone by `local_path`): percent-
escaped, so that a space, `#`, `?`, `%` or `ü` in it reaches the file and is not read as
URL syntax. Spark reads local paths as Hadoop glob patterns: `spark_path_error` names the
characters it cannot take.

`checksum` is the SHA-256 of a file's bytes: with the x86 SHA extensions (OpenSSL) it is the
fastest strong hash in hashlib (1.5 GB/s on one core here; blake2b 0.4, md5 0.6), and
hashlib releases the GIL while it hashes, so threads hash files in parallel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, unquote, urlparse

from longseq.schemas.errors import LongseqError

CHECKSUM = "sha256"
_CHUNK = 8 << 20  # bytes per read while hashing


def _hash_stream(read) -> str:
    h = hashlib.new(CHECKSUM)
    while chunk := read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


class Storage(Protocol):
    def exists(self, path: str) -> bool: ...
    def list_names(self, path: str) -> list[str]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def write_text(self, path: str, text: str) -> None: ...
    def read_text(self, path: str) -> str: ...
    def size(self, path: str) -> int: ...
    def checksum(self, path: str) -> str: ...
    def stamp(self, path: str) -> tuple[int, int]: ...


class LocalStorage:
    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def list_names(self, path: str) -> list[str]:
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def rename(self, src: str, dst: str) -> None:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)

    def delete(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    def write_text(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def read_text(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def size(self, path: str) -> int:
        if os.path.isfile(path):
            return os.path.getsize(path)
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)

    def checksum(self, path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, CHECKSUM).hexdigest()

    def stamp(self, path: str) -> tuple[int, int]:
        """(size, mtime in ns): what a cached checksum is valid for."""
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns


class HadoopStorage:
    """The same operations through the JVM's Hadoop FileSystem (HDFS, S3A, GCS, file://)."""

    def __init__(self, spark: Any):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(self._conf), p

    def exists(self, path: str) -> bool:
        fs, p = self._fs(path)
        return bool(fs.exists(p))

    def list_names(self, path: str) -> list[str]:
        fs, p = self._fs(path)
        if not fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def rename(self, src: str, dst: str) -> None:
        fs, s = self._fs(src)
        _, d = self._fs(dst)
        fs.mkdirs(d.getParent())
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        fs.delete(p, True)

    def write_text(self, path: str, text: str) -> None:
        fs, p = self._fs(path)
        tmp = self._jvm.org.apache.hadoop.fs.Path(f"{path}.{uuid.uuid4().hex}.tmp")
        out = fs.create(tmp, True)
        out.write(bytearray(text.encode()))
        out.close()
        fs.delete(p, False)
        if not fs.rename(tmp, p):
            raise OSError(f"could not rename {tmp} to {path}")

    def read_text(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            return "\n".join(iter(reader.readLine, None))
        finally:
            stream.close()

    def size(self, path: str) -> int:
        fs, p = self._fs(path)
        return int(fs.getContentSummary(p).getLength())

    def checksum(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:  # py4j hands each byte[] over as bytes: slower than pyarrow, but any Hadoop scheme
            return _hash_stream(stream.readNBytes)
        finally:
            stream.close()

    def stamp(self, path: str) -> tuple[int, int]:
        fs, p = self._fs(path)
        status = fs.getFileStatus(p)
        return int(status.getLen()), int(status.getModificationTime()) * 1_000_000


class ArrowStorage:
    """The same operations through pyarrow.fs, for processes without Spark (publish, the
    trainer's reader) that are given a URI (hdfs://, s3://, file://)."""

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        self._fs, _ = pafs.FileSystem.from_uri(uri)
        self._scheme = urlparse(uri).scheme

    def _path(self, path: str) -> str:
        u = urlparse(path)
        return f"{u.netloc}{u.path}" if self._scheme in ("s3", "gs") else u.path

    def _info(self, path: str) -> Any:
        return self._fs.get_file_info(self._path(path))

    def exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self._info(path).type != pafs.FileType.NotFound

    def list_names(self, path: str) -> list[str]:
        import pyarrow.fs as pafs

        if self._info(path).type != pafs.FileType.Directory:
            return []
        return sorted(i.base_name for i in self._fs.get_file_info(pafs.FileSelector(self._path(path))))

    def rename(self, src: str, dst: str) -> None:
        self._fs.create_dir(self._path(dst).rsplit("/", 1)[0], recursive=True)
        self._fs.move(self._path(src), self._path(dst))

    def delete(self, path: str) -> None:
        import pyarrow.fs as pafs

        kind = self._info(path).type
        if kind == pafs.FileType.Directory:
            self._fs.delete_dir(self._path(path))
        elif kind != pafs.FileType.NotFound:
            self._fs.delete_file(self._path(path))

    def write_text(self, path: str, text: str) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self._fs.create_dir(self._path(path).rsplit("/", 1)[0], recursive=True)
        with self._fs.open_output_stream(self._path(tmp)) as f:
            f.write(text.encode())
        self.delete(path)
        self._fs.move(self._path(tmp), self._path(path))

    def read_text(self, path: str) -> str:
        with self._fs.open_input_stream(self._path(path)) as f:
            return f.read().decode()

    def size(self, path: str) -> int:
        return int(self._info(path).size or 0)

    def checksum(self, path: str) -> str:
        with self._fs.open_input_stream(self._path(path)) as f:
            return _hash_stream(f.read)

    def stamp(self, path: str) -> tuple[int, int]:
        info = self._info(path)
        return int(info.size or 0), int(info.mtime_ns or 0)


def checksums(storage: Storage, directory: str, names: list[str]) -> dict[str, str]:
    """name -> SHA-256 of each file of a directory, hashed in threads (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1, 8))) as pool:
        return dict(zip(names, pool.map(lambda n: storage.checksum(f"{directory}/{n}"), names)))


def is_local(path: str) -> bool:
    return urlparse(str(path)).scheme == ""


def file_url(path: str) -> str:
    """What readers are handed: file:///abs/path, percent-escaped; a URI stays as it is."""
    # '=' kept: it is valid in a URL path, and partition names (ds=...) stay readable
    return f"file://{quote(absolute(path), safe='/=')}" if is_local(path) else path


def local_path(url: str) -> str:
    """The local path of a file:// URL (escapes undone); a plain path stays as it is."""
    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    return url


def open_input(url: str) -> BinaryIO:
    """A file for reading, given a local path, a file:// URL or a cluster URI."""
    if is_local(url) or url.startswith("file://"):
        return open(local_path(url), "rb")
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(url)
    return fs.open_input_file(inner)


class PathError(LongseqError):
    """A path that a tool on the way cannot take."""


# Spark reads every path as a Hadoop glob: these do not match themselves, so a read fails
_SPARK_UNREADABLE = "[]{}\\"


def spark_path_error(path: str) -> str | None:
    """Why Spark cannot read this path, or None. `*` and `?` match themselves, but also
    other names: a local path is refused if it matches a sibling (Spark would read both)."""
    bad = sorted({c for c in path if c in _SPARK_UNREADABLE})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return (f"{path}: Spark reads paths as glob patterns and cannot read one containing {shown}; "
                "use a directory without them (or the polars engine)")
    if is_local(path) and ("*" in path or "?" in path):
        import glob

        others = [m for m in glob.glob(path) if m != path]
        if others:
            return (f"{path}: Spark reads paths as glob patterns, and its '*' or '?' also matches {others[0]}; "
                    "rename one of them")
    return None


def absolute(path: str) -> str:
    """Local paths made absolute: Spark's JVM resolves relative paths against its own
    working directory, which need not be Python's."""
    return os.path.abspath(path) if is_local(path) else path


def storage_for(path: str, spark: Any = None, arrow: bool = False) -> Storage:
    """LocalStorage for local paths; for URIs, Hadoop's (with Spark) or pyarrow's (`arrow`)."""
    if is_local(path):
        return LocalStorage()
    if arrow:
        return ArrowStorage(path)
    if spark is None:
        raise ValueError(f"{path} is not a local path: it needs a Spark session (the spark engine)")
    return HadoopStorage(spark)


class RoutingStorage:
    """Local paths through the os module, URIs through Hadoop: one Storage for any path."""

    def __init__(self, spark: Any):
        self._local = LocalStorage()
        self._spark = spark

    def __getattr__(self, op: str) -> Any:
        def call(path: str, *rest: Any) -> Any:
            # every path a Spark engine or validation reaches comes through here first
            if problem := spark_path_error(path):
                raise PathError(problem)
            storage = self._local if is_local(path) else storage_for(path, self._spark)
            try:
                return getattr(storage, op)(path, *rest)
            except Exception as e:  # py4j errors from Hadoop (no such scheme, permissions)
                if isinstance(e, OSError):
                    raise
                raise OSError(f"{op} {path}: {str(e).splitlines()[0][:300]}") from None

        return call
