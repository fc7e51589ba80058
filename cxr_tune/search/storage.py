"""Where an experiment lives: a local folder, an NFS path, or a cloud URI (s3://, gs://, ...).

A thin layer over ``pyarrow.fs`` (which Ray uses for the same storage), so the search can check
for an existing experiment and write its own small files next to Ray's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

from cxr_tune.errors import ConfigError

DEFAULT_STORAGE = "~/cxr_tune_results"


def is_uri(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


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
        text = (text or os.environ.get("CXR_TUNE_STORAGE") or DEFAULT_STORAGE).strip()
        if not text:
            raise ConfigError("--storage: the value is empty.")
        if text.startswith("file://"):
            text = text[len("file://") :]
        if is_uri(text):
            try:
                pyarrow.fs.FileSystem.from_uri(text)
            except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
                raise ConfigError(f"--storage: cannot use '{text}': {exc}") from None
            return cls(text.rstrip("/"))
        return cls(str(Path(text).expanduser().resolve()))

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
        fs, base = self._fs()
        path = f"{base}/{name}/{relative}".rstrip("/")
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def write_text(self, name: str, relative: str, text: str) -> None:
        """Write a small file into the experiment folder (atomically for local storage)."""
        if self.is_local:
            target = Path(self.root) / name / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
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
