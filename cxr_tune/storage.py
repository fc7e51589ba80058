"""Where an experiment lives: a local folder, an NFS path, or a cloud URI (s3://, gs://, ...).

Part of the results layer (with ``experiment.py`` and ``stats.py``): the search writes through
it, and the evaluation and the report read through it.

A thin layer over ``pyarrow.fs`` (which Ray uses for the same storage), so the search can check
for an existing experiment, write its own small files next to Ray's, and work on a local copy
of a remote experiment (the report and the final evaluation read local files) whose new files
go back up. Credentials and endpoints come from the environment as for Ray and the AWS CLI
(``AWS_PROFILE``, an instance profile, ``AWS_ENDPOINT_URL`` for an S3-compatible server, ...).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

from cxr_tune.constants import (
    CHECKPOINT_PREFIX,
    DEFAULT_SCRATCH_DIR,
    DEFAULT_STORAGE,
    ENV_SCRATCH,
    ENV_STORAGE,
)
from cxr_tune.errors import ConfigError
from cxr_tune.files import write_atomic

Snapshot = dict[str, tuple[int, int]]
# Each read from S3 is one ranged GET: large chunks keep a model checkpoint to a few requests.
COPY_CHUNK = 64 << 20


def is_uri(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def scratch_dir() -> Path:
    """The driver's own files for experiments on remote storage: ``$CXR_TUNE_SCRATCH`` or
    ``~/.cache/cxr_tune/studies``."""
    return Path(os.environ.get(ENV_SCRATCH, DEFAULT_SCRATCH_DIR)).expanduser()


def local_copy_folder(name: str) -> Path:
    """Where a driver keeps its copy of the remote experiment ``name`` (kept: open the report)."""
    return scratch_dir() / name / "copy"


# URI query options of pyarrow's file systems that carry a secret.
_SECRET_OPTIONS = frozenset({"access_key", "secret_key", "session_token", "credential", "token"})


def _refuse_credentials(uri: str) -> None:
    """A storage URI is written to the experiment record and printed; it must carry no secret.

    Raises:
        ConfigError: the URI has ``user:password@`` or a secret query option (the message
            shows the URI with the secret masked).
    """
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(uri)
    secret_options = {k for k, _ in parse_qsl(parts.query) if k.lower() in _SECRET_OPTIONS}
    if parts.password is None and not secret_options and "@" not in parts.netloc:
        return
    host = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_OPTIONS else f"{k}={v}"
        for k, v in parse_qsl(parts.query)
    )
    shown = (
        f"{parts.scheme}://***@{host}{parts.path}"
        if "@" in parts.netloc
        else (f"{parts.scheme}://{host}{parts.path}")
    )
    raise ConfigError(
        f"--storage: '{shown}{'?' + query if query else ''}' carries credentials, which would "
        "be written to the experiment record and printed; give them through the environment "
        "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) "
        "or an instance profile instead."
    )


@dataclass(frozen=True)
class Storage:
    """An experiments root.

    Attributes:
        root: an absolute local path, or a URI for remote storage.
    """

    root: str

    @classmethod
    def parse(cls, text: str | None) -> Storage:
        """``--storage`` value -> Storage (local paths made absolute, ``~`` expanded)."""
        text = (text or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE).strip()
        if not text:
            raise ConfigError("--storage: the value is empty.")
        if text.startswith("file://"):
            text = text[len("file://") :]
        if is_uri(text):
            _refuse_credentials(text)
            try:
                pyarrow.fs.FileSystem.from_uri(text)
            except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
                raise ConfigError(f"--storage: cannot use '{text}': {exc}") from None
            return cls(text.rstrip("/"))
        local = Path(text).expanduser().resolve()
        if local.exists() and not local.is_dir():
            raise ConfigError(f"--storage: '{text}' is a file, but must be a folder.")
        return cls(str(local))

    @property
    def is_local(self) -> bool:
        return not is_uri(self.root)

    def experiment(self, name: str) -> str:
        """The experiment folder (path or URI)."""
        return f"{self.root}/{name}" if not self.is_local else str(Path(self.root) / name)

    def _fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.root
        return pyarrow.fs.FileSystem.from_uri(self.root)

    def exists(self, name: str, relative: str = "") -> bool:
        """Whether the experiment folder (or a file in it) exists.

        Raises:
            ConfigError: remote storage that cannot be reached (credentials, bucket, endpoint).
        """
        fs, base = self._fs()
        path = f"{base}/{name}/{relative}".rstrip("/")
        try:
            return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound
        except OSError as exc:
            raise ConfigError(f"--storage: cannot reach '{self.root}': {exc}") from None

    def write_text(self, name: str, relative: str, text: str) -> None:
        """Write a small file into the experiment folder (atomically for local storage)."""
        if self.is_local:
            target = Path(self.root) / name / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, text)
            return
        fs, base = self._fs()
        with fs.open_output_stream(f"{base}/{name}/{relative}") as f:
            f.write(text.encode("utf-8"))

    def read_text(self, name: str, relative: str) -> str:
        fs, base = self._fs()
        with fs.open_input_stream(f"{base}/{name}/{relative}") as f:
            return f.read().decode("utf-8")

    def upload(self, local: Path, name: str, relative: str) -> None:
        """Copy a local file into the experiment folder (no-op if it is already there)."""
        if self.is_local:
            target = Path(self.root) / name / relative
            if local.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(local.read_bytes())
            return
        fs, base = self._fs()
        pyarrow.fs.copy_files(str(local), f"{base}/{name}/{relative}", destination_filesystem=fs)

    def latest(self, prefix: str) -> str | None:
        """Name of the most recently modified experiment whose name starts with ``prefix``."""
        fs, base = self._fs()
        selector = pyarrow.fs.FileSelector(base, allow_not_found=True)
        found = [
            info
            for info in fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(prefix)
        ]
        if not found:
            return None
        return max(found, key=lambda i: i.mtime_ns or 0).base_name

    @classmethod
    def of_experiment(cls, location: str) -> tuple[Storage, str]:
        """``s3://bucket/results/name`` or ``/path/name`` -> (its storage, the name)."""
        location = location.rstrip("/")
        root, _, name = location.rpartition("/")
        if not name or not root:
            raise ConfigError(f"'{location}' does not name an experiment folder.")
        return cls.parse(root), name

    def list_files(self, name: str, relative: str = "") -> list[str]:
        """Paths of the files under the experiment folder (or a sub-folder), relative to it."""
        fs, base = self._fs()
        top = f"{base}/{name}"
        start = f"{top}/{relative}".rstrip("/")
        selector = pyarrow.fs.FileSelector(start, recursive=True, allow_not_found=True)
        return sorted(
            info.path[len(top) + 1 :]
            for info in fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File
        )

    def download(
        self, name: str, target: Path, *, relative: str = "", checkpoints: bool = False
    ) -> Path:
        """Copy the experiment folder (or a sub-folder) into the local folder ``target``.

        Args:
            checkpoints: copy trial checkpoints too (they can be gigabytes; the report and the
                choice of what to evaluate need none of them).

        Returns:
            ``target``, the experiment folder's local copy.
        """
        fs, base = self._fs()
        for path in self.list_files(name, relative):
            if not checkpoints and _in_checkpoint(path):
                continue
            local = target / path
            local.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{base}/{name}/{path}") as source, open(local, "wb") as out:
                shutil.copyfileobj(source, out, length=COPY_CHUNK)
        return target

    def upload_changes(self, local: Path, name: str, since: Snapshot) -> list[str]:
        """Upload the files of the local copy ``local`` that are new or changed since ``since``.

        Returns:
            The uploaded paths, relative to the experiment folder.
        """
        fs, base = self._fs()
        changed = [
            path
            for path, stamp in snapshot(local).items()
            if since.get(path) != stamp and not _in_checkpoint(path)  # those came from there
        ]
        for path in changed:
            with (
                open(local / path, "rb") as source,
                fs.open_output_stream(f"{base}/{name}/{path}") as out,
            ):
                shutil.copyfileobj(source, out, length=COPY_CHUNK)
        return changed

    @contextmanager
    def local_copy(self, name: str, folder: Path) -> Iterator[Path]:
        """The experiment as a local folder: the folder itself for local storage; else a fresh
        copy in ``folder`` (no checkpoints) whose new and changed files are uploaded when the
        block ends without an error."""
        if self.is_local:
            yield Path(self.experiment(name))
            return
        shutil.rmtree(folder, ignore_errors=True)
        self.download(name, folder)
        before = snapshot(folder)
        yield folder
        self.upload_changes(folder, name, before)


def _in_checkpoint(path: str) -> bool:
    return any(part.startswith(CHECKPOINT_PREFIX) for part in path.split("/")[:-1])


def snapshot(folder: Path) -> Snapshot:
    """Size and modification time of every file under ``folder``, by relative path."""
    stamps: Snapshot = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            stamps[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return stamps
