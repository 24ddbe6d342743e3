"""A temporary folder for Airflow homes, removed afterwards unless asked to keep it."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def scratch_dir(prefix: str, keep: bool = False, what: str = "work dir") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"{what} kept: {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
