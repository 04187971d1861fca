"""Output folders that disappear again when the command that made them fails."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create ``path`` (and its parents) for the body of a ``with`` block.

    If the body raises, every folder this call created is removed again as
    long as it is still empty, so a failed command leaves no empty output
    folder behind. Folders that existed before and anything written into them
    are never touched.
    """
    target = Path(path)
    created = []
    for folder in [target, *target.parents]:
        if folder.exists():
            break
        created.append(folder)
    target.mkdir(parents=True, exist_ok=True)
    try:
        yield target
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
            logger.debug("Removed the empty output folder %s", folder)
        raise
