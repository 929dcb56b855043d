"""Atomic prep outputs: the pipeline writes into a staging folder beside the output, then it is published.

Locally (and on any POSIX filesystem) publishing is two renames in the same parent folder: the old
output moves aside, the staging folder takes its name, the old one is deleted. A crashed run leaves only a
``<output>.tmp-*`` folder, never a half-written output; a re-run replaces the previous result, so no
record is written twice.

Object stores (``gs://``) have no folder rename: files are copied into the (emptied) output prefix and
``manifest.json`` is copied last, so a reader that waits for the manifest never sees a partial result.
"""

from __future__ import annotations

import os
import shutil
import uuid

from apache_beam.io.filesystems import FileSystems

from speechid import schema


def is_local(path: str) -> bool:
    return "://" not in path


def new_staging_dir(output: str) -> str:
    """A fresh folder beside ``output`` (same filesystem, so the final rename is atomic)."""
    staging = f"{output.rstrip('/')}.tmp-{uuid.uuid4().hex[:12]}"
    if is_local(staging):
        os.makedirs(staging)
    else:
        FileSystems.mkdirs(staging)
    return staging


def remove_tree(path: str) -> None:
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif FileSystems.exists(path.rstrip("/") + "/"):
        FileSystems.delete([path.rstrip("/") + "/"])


def publish(staging: str, output: str) -> None:
    """Move the finished ``staging`` folder to ``output``, replacing whatever was there."""
    if is_local(output):
        output = output.rstrip(os.sep)
        parent = os.path.dirname(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        old = None
        if os.path.lexists(output):
            old = f"{output}.old-{uuid.uuid4().hex[:12]}"
            os.rename(output, old)
        os.rename(staging, output)
        if old:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old)
            else:
                os.remove(old)
        return

    src_root, dst_root = staging.rstrip("/") + "/", output.rstrip("/") + "/"
    remove_tree(dst_root)
    files = [m.path for r in FileSystems.match([src_root + "**"]) for m in r.metadata_list]
    files.sort(key=lambda p: p.endswith("/" + schema.MANIFEST))  # the manifest last
    for src in files:
        FileSystems.copy([src], [dst_root + src[len(src_root) :]])
    remove_tree(src_root)
