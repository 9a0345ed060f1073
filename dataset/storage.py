"""How a path is reached: one small Storage interface for local disks and cluster URIs.

Local paths go through the os module; URIs with a scheme (hdfs://, s3a://, file://)
through Hadoop's FileSystem API of the running Spark session (HadoopStorage), or through
pyarrow.fs in processes without Spark (ArrowStorage: publish, the trainer's reader).
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any, Protocol
from urllib.parse import urlparse


class Storage(Protocol):
    def exists(self, path: str) -> bool: ...
    def list_names(self, path: str) -> list[str]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def write_text(self, path: str, text: str) -> None: ...
    def read_text(self, path: str) -> str: ...
    def size(self, path: str) -> int: ...


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


def is_local(path: str) -> bool:
    return urlparse(str(path)).scheme == ""


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
            storage = self._local if is_local(path) else storage_for(path, self._spark)
            try:
                return getattr(storage, op)(path, *rest)
            except Exception as e:  # py4j errors from Hadoop (no such scheme, permissions)
                if isinstance(e, OSError):
                    raise
                raise OSError(f"{op} {path}: {str(e).splitlines()[0][:300]}") from None

        return call
