"""Owner-only files: what the platform keeps on disk holds tenants' weights, prompts and its credentials.

Folders are 0700 and files 0600 from the moment they exist (never created open, then narrowed). A
folder that already exists is narrowed too, so a data folder made by an older version is closed on
its next start.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

PRIVATE_UMASK = 0o077      # for child processes (subprocess ``umask=``) and the ``maas up`` process
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """``path`` (and missing parents) as a folder only its owner can enter."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):   # outermost first: each is born 0700 whatever the umask
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)   # mkdir's mode is masked, and an older folder may be wider
    return path


def open_private_append(path: Path | str) -> BinaryIO:
    """``path`` opened for appending bytes, created 0600 (an existing file is narrowed to 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def write_private_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path``, which is 0600 from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(text)
