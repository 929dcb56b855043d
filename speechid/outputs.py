"""Output folders: whose they are, where they may go, and how a new result replaces an old one.

Every command that writes a folder goes through here, so one rule protects them all:

- A folder a command wrote holds ``MARKER`` (``.speechid.json``): the command, the speechid version and
  the list of files it wrote. A command replaces a folder only when it is absent, empty, or marked as
  its own output and holding nothing but the files listed; anything else (a user's folder, another
  command's output, an own output someone added files to) is refused with an ``OutputError`` before
  any work starts. Replacing deletes only the listed files, never a whole prefix.
- An output may not contain an input or lie inside one (``check_apart``): ``--output`` pointing at the
  folder the archives are in would otherwise replace them.
- ``stage`` creates a fresh folder ``<output>.tmp-<id>`` beside the output; ``publish`` moves it into
  place (on local disks the old result is renamed to ``<output>.old-<id>``, the staging folder renamed
  into place, then the old one removed; on object stores, which have no rename, a copy with the marker
  last, then the old result's listed files are deleted). A crashed run never leaves a folder that looks
  complete. ``claim`` is the same check for commands that write into their folder in place (``train``).
- A run never publishes what it read from an input that was replaced while it ran. ``stage`` (or
  ``snapshot``, for commands that stage only once they have read everything) records the generation of
  each input that is a speechid output (its marker's run id and time), and ``publish`` refuses with one
  line when one changed: a reader during another job's publish reads one corpus or fails, never a mix.
- Leftovers are recognised by record, never by name: each run records the folders it creates (its
  random id, the staging folder, the old folder it moves aside) in ``runs_dir()``, a per-user folder
  only speechid writes, before it creates them. The next run into the same output finishes what a
  killed run left there: it puts back an output moved aside but not replaced, and removes the recorded
  folders whose marker is still the recorded one. A folder named like a leftover (a user's
  ``idx.old-mine``, a ``cp -a`` of an output, marker and all) is not in any record and is never touched;
  a killed run on another machine is cleaned up by that machine's next run.

Paths may be local or on any Beam filesystem (gs://, s3://, ...); Beam is imported only for those.
Errors name the path as the user gave it, never the staging folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from speechid import __version__
from speechid.errors import OutputError

MARKER = ".speechid.json"
STAGING_INFIX = ".tmp-"
OLD_INFIX = ".old-"
STALE_REMOTE_S = 24 * 3600  # a record another machine made (a shared home) is taken for a running run this long


def is_local(path: str) -> bool:
    """A local path (not gs://, s3://, ...)."""
    return "://" not in os.fspath(path)


def resolve(path: str) -> str:
    """Absolute local path with symlinks resolved, or a remote path without its trailing slash."""
    path = os.fspath(path)
    if is_local(path):
        return os.path.realpath(os.path.expanduser(path))
    return path.rstrip("/")


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def list_files(folder: str) -> list[str]:
    """Every file under ``folder``, as sorted paths relative to it ('/'-separated); [] if there is none."""
    if is_local(folder):
        found = []
        for root, dirs, files in os.walk(folder):
            # A symlink to a folder is listed as an entry, not followed: we never reach outside.
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            found += [os.path.relpath(os.path.join(root, n), folder) for n in files + links]
        return sorted(f.replace(os.sep, "/") for f in found)
    prefix = folder.rstrip("/") + "/"
    results = _filesystems().match([prefix + "**"])
    return sorted(m.path[len(prefix) :] for r in results for m in r.metadata_list if not m.path.endswith("/"))


def _read_json(path: str):
    """The JSON document at ``path``, or None when it is missing or unreadable."""
    try:
        if is_local(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        with _filesystems().open(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    except Exception:  # remote filesystems raise their own types (BeamIOError, ...)
        return None


def write_json(path: str, obj: dict) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if is_local(path):
        tmp = f"{path}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with _filesystems().create(path) as f:
        f.write(data)


def read_marker(folder: str) -> dict | None:
    """The marker of ``folder`` (a dict with at least 'command'), or None when it has none we can read."""
    marker = _read_json(_join(folder, MARKER))
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name) if is_local(folder) else folder.rstrip("/") + "/" + name


def _under(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or inside it (both resolved)."""
    if child == parent:
        return True
    sep = os.sep if is_local(parent) else "/"
    return child.startswith(parent.rstrip(sep) + sep)


def glob_root(pattern: str) -> str:
    """The folder a glob pattern searches under (the pattern itself when it has no wildcard)."""
    cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=-1)
    if cut < 0:
        return pattern
    return pattern[:cut].rsplit("/", 1)[0] or "/"


def check_apart(output: str, inputs: Iterable[str], flag: str = "--output") -> None:
    """Refuse an output that is an input, contains one, or lies inside one (``OutputError``).

    An input may be a file, a folder or a glob; a glob's files are all under its ``glob_root``.
    """
    output = os.fspath(output)
    out = resolve(output)
    for given in map(os.fspath, inputs):
        if is_local(given) != is_local(output):
            continue
        root = glob_root(given)
        path = resolve(root)
        if _under(path, out):
            what = "is" if path == out and root == given else "contains"
            raise OutputError(f"{flag} {output} {what} the input {given}; choose an output folder elsewhere")
        if root == given and _under(out, path):
            raise OutputError(f"{flag} {output} is inside the input {given}; choose an output folder elsewhere")


def check_output(
    output: str, command: str, inputs: Iterable[str] = (), *, replace: bool = True, flag: str = "--output"
) -> str:
    """Refuse ``output`` unless ``command`` may write it (see the module docstring); return it resolved.

    ``replace=False`` (a command writing into its folder in place) skips the check for files the marker
    does not list: nothing will be deleted. ``flag`` is the option the messages name.
    """
    output = os.fspath(output)
    check_apart(output, inputs, flag)
    path = resolve(output)
    if is_local(path):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise OutputError(f"{flag} {output}: exists and is not a folder")
        if replace and os.path.ismount(path):
            raise OutputError(f"{flag} {output}: is a mount point, and a finished result is moved into place by "
                              f"renaming a folder, which a mount point cannot take; choose a folder inside it "
                              f"(e.g. {os.path.join(output, 'out')})")
        files = list_files(path) if os.path.isdir(path) else []
    else:
        files = list_files(path)
        if not files and _filesystems().exists(path):
            raise OutputError(f"{flag} {output}: exists and is not a folder")
    if not files:
        return path
    marker = read_marker(path)
    if marker is None:
        raise OutputError(
            f"{flag} {output}: not empty and not written by `speechid {command}` (no {MARKER}); "
            "refusing to replace it: choose a new or empty folder"
        )
    if marker["command"] != command:
        raise OutputError(
            f"{flag} {output}: holds the output of `speechid {marker['command']}`, not of "
            f"`speechid {command}`; refusing to replace it"
        )
    if replace:
        listed = set(marker.get("files") or ())
        foreign = [f for f in files if f != MARKER and f not in listed]
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise OutputError(
                f"{flag} {output}: holds files `speechid {command}` did not write "
                f"({', '.join(foreign[:3])}{more}); move them away or choose another folder"
            )
    return path


_GENERATION = ("command", "created_unix", "run")


def snapshot(inputs: Iterable[str]) -> dict[str, dict]:
    """The generation of every speechid output among ``inputs`` (a folder with a marker, or a file or
    pattern directly inside one): {folder: its marker's command, time and run id}. Take it before reading."""
    found: dict[str, dict] = {}
    for given in inputs:
        given = os.fspath(given)
        parent = os.path.dirname(given) if is_local(given) else given.rstrip("/").rsplit("/", 1)[0]
        for folder in (given, parent):
            if not folder or "*" in folder or "?" in folder or "[" in folder:
                continue
            folder = resolve(folder)
            if folder in found:
                break
            try:
                marker = read_marker(folder)
            except Exception:  # not a folder we can read: not a speechid output
                marker = None
            if marker is not None:
                found[folder] = {k: marker.get(k) for k in _GENERATION}
                break
    return found


def replaced_input(staging: str) -> str | None:
    """Why the run of ``staging`` may not publish: an input it read (``snapshot``) was replaced or removed
    since, as one line naming it; None when every input is as it was."""
    marker = read_marker(staging) or {}
    for folder, generation in (marker.get("inputs_read") or {}).items():
        try:
            now = read_marker(folder)
        except Exception:
            now = None
        if now is None or {k: now.get(k) for k in _GENERATION} != generation:
            what = f"replaced by another `speechid {now['command']}` run" if now else "removed"
            return (f"input {folder} was {what} while this run read it; nothing was published (what was read "
                    "may mix two versions): run again")
    return None


def stage(output: str, command: str, inputs: Iterable[str] = (), flag: str = "--output",
          read: dict[str, dict] | None = None) -> str:
    """Finish what killed runs left at ``output`` (``recover``), check it (``check_output``), then create and
    mark a fresh staging folder beside it, recorded as this run's. ``read``: the ``snapshot`` of the inputs
    taken when the run began reading them (default: taken now)."""
    output = os.fspath(output)
    recover(output)
    path = check_output(output, command, inputs, flag=flag)
    run = uuid.uuid4().hex
    staging = f"{path}{STAGING_INFIX}{run[:8]}"
    _record(run, output=path, command=command, staging=staging, host=socket.gethostname(), pid=os.getpid(),
            created_unix=round(time.time(), 3))
    marker = {
        "command": command,
        "speechid_version": __version__,
        "created_unix": round(time.time(), 3),
        "staging_for": path,
        "run": run,
        "inputs_read": snapshot(inputs) if read is None else read,
        "files": None,
    }
    try:
        if is_local(staging):
            os.makedirs(staging)
        write_json(_join(staging, MARKER), marker)
    except OSError as e:
        if is_local(staging):
            shutil.rmtree(staging, ignore_errors=True)
        _forget(run)
        raise OutputError(f"{flag} {output}: cannot write there ({e.strerror or e})") from None
    except Exception as e:  # remote filesystems raise their own types (BeamIOError, ...)
        _forget(run)
        raise OutputError(f"{flag} {output}: cannot write there ({e})") from None
    return staging


@contextmanager
def staged(output: str, command: str, inputs: Iterable[str] = (), flag: str = "--output",
           read: dict[str, dict] | None = None) -> Iterator[str]:
    """``stage`` a folder for ``output``, yield it, ``publish`` it on success and ``discard`` it on any
    failure: for commands that write their whole result from this process."""
    staging = stage(output, command, inputs, flag=flag, read=read)
    try:
        yield staging
        publish(staging, output, command)
    except BaseException as e:
        fail(staging, e)
        raise


def publish(staging: str, output: str, command: str) -> None:
    """Move ``staging`` into place at ``output`` (see the module docstring)."""
    output = os.fspath(output)
    path = check_output(output, command)  # again: the folder may have changed while the job ran
    problem = replaced_input(staging)
    if problem:
        raise OutputError(problem)
    staged_marker = read_marker(staging)
    run = staged_marker["run"]
    files = [f for f in list_files(staging) if f != MARKER]
    marker = {"command": command, "speechid_version": __version__, "created_unix": round(time.time(), 3),
              "run": run, "inputs_read": staged_marker.get("inputs_read") or {}, "files": files}
    write_json(_join(staging, MARKER), marker)
    if is_local(path):
        old = None
        if os.path.isdir(path):
            if list_files(path):
                old = f"{path}{OLD_INFIX}{run[:8]}"
                _record(run, old=old, old_marker=read_marker(path))  # before the rename: a kill may follow it
                os.rename(path, old)
            else:
                shutil.rmtree(path)  # empty folders only: nothing in it was anyone's file
        os.rename(staging, path)
        if old:
            try:
                remove_tree(old)
            except OSError:
                return  # the record stays: the next run into this output removes it
    else:
        _publish_remote(staging, path, files)
    _forget(run)


def _publish_remote(staging: str, path: str, files: list[str]) -> None:
    fs = _filesystems()
    previous = read_marker(path)
    old_files = set((previous or {}).get("files") or ())
    # The marker goes last: until it is replaced the folder still describes the old files it lists.
    for rel in [*files, MARKER]:
        fs.copy([_join(staging, rel)], [_join(path, rel)])
    stale = sorted(old_files - set(files))
    if stale:
        fs.delete([_join(path, rel) for rel in stale])
    remove_tree(staging)


def runs_dir() -> str:
    """Where runs record the folders they create: ``$XDG_STATE_HOME/speechid/runs`` (``~/.local/state``
    when unset), one ``<run id>.json`` per run in progress, removed when the run has tidied up."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "speechid", "runs")


def _record(run: str, **fields) -> None:
    """Add ``fields`` to the record of ``run``. Best effort: a folder left without a record is kept, never
    lost."""
    path = os.path.join(runs_dir(), f"{run}.json")
    try:
        os.makedirs(runs_dir(), exist_ok=True)
        write_json(path, {**(_read_json(path) or {}), "run": run, **fields})
    except OSError:
        pass


def _forget(run: str) -> None:
    try:
        os.remove(os.path.join(runs_dir(), f"{run}.json"))
    except OSError:
        pass


def _dead_runs(path: str) -> list[dict]:
    """The records of runs into ``path`` (resolved) whose process is gone."""
    try:
        names = sorted(n for n in os.listdir(runs_dir()) if n.endswith(".json"))
    except OSError:
        return []
    records = (_read_json(os.path.join(runs_dir(), n)) for n in names)
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("run"), str) and r.get("output") == path
            and not _still_running(r)]


def _is_recorded(folder: str, expected: dict) -> bool:
    """``folder`` holds nothing, or its marker holds what the record says (staging: the run id; an old
    output: its whole marker). ``remove_tree`` deletes a marker last, so a removal cut short still counts."""
    marker = read_marker(folder)
    if marker is None:
        return not list_files(folder)
    return all(marker.get(k) == v for k, v in expected.items())


def recover(output: str) -> None:
    """Finish what killed runs into ``output`` left: put back an output a run moved aside and did not
    replace, and remove the staging and old folders they recorded (only those; see the module docstring)."""
    path = resolve(output)
    for record in _dead_runs(path):
        staging, old = record.get("staging"), record.get("old")
        try:
            if (old and is_local(path) and not os.path.lexists(path) and os.path.isdir(old)
                    and _is_recorded(old, record.get("old_marker") or {}) and list_files(old)):
                os.rename(old, path)  # the killed run's result was never published: the old one stands
            for folder, expected in ((staging, {"run": record["run"]}), (old, record.get("old_marker") or {})):
                if folder and _is_recorded(folder, expected):
                    remove_tree(folder)
        except Exception:  # best effort: the record stays for the next run
            continue
        _forget(record["run"])


def _still_running(record: dict) -> bool:
    if record.get("host") != socket.gethostname():
        return time.time() - float(record.get("created_unix") or 0) < STALE_REMOTE_S
    try:
        os.kill(int(record.get("pid") or 0), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return int(record.get("pid") or 0) > 0


def claim(folder: str, command: str, inputs: Iterable[str] = (), flag: str = "--output") -> str:
    """For a command that writes into ``folder`` in place: ``check_output`` without replacing, then make
    the folder and mark it as ``command``'s if it is new. Returns the resolved folder."""
    folder = os.fspath(folder)
    path = check_output(folder, command, inputs, replace=False, flag=flag)
    if read_marker(path) is None:
        try:
            if is_local(path):
                os.makedirs(path, exist_ok=True)
            write_json(_join(path, MARKER), {"command": command, "speechid_version": __version__,
                                              "created_unix": round(time.time(), 3), "files": None})
        except OSError as e:
            raise OutputError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
    return path


def _disk_full(error: BaseException) -> bool:
    """``error`` or one it wraps is "no space left" (Beam re-raises a worker's OSError as text in a
    RuntimeError, so the text counts too)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "[Errno 28]" in str(error) or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _size(folder: str) -> int:
    total = 0
    for rel in list_files(folder) if is_local(folder) else []:
        if rel == MARKER:
            continue
        try:
            total += os.path.getsize(os.path.join(folder, rel))
        except OSError:
            pass
    return total


def fail(staging: str, error: BaseException) -> None:
    """``discard`` the staging folder of a run that raised ``error``; when an input it read was replaced
    meanwhile (the likely cause of a file vanishing mid-read), or the disk filled up, raise that as one
    line naming the output instead."""
    problem = None
    if not isinstance(error, (KeyboardInterrupt, OutputError)):
        problem = replaced_input(staging)
        if problem is None and _disk_full(error):
            output = (read_marker(staging) or {}).get("staging_for") or staging.rsplit(STAGING_INFIX, 1)[0]
            written = _size(staging)
            problem = (f"{output}: the disk filled up while this run wrote it (no space left on device); "
                       f"nothing was published and what it had written is removed. It needs more than "
                       f"{_human(written)} free there (that much was written when the disk filled): free space "
                       "or choose another --output")
    discard(staging)
    if problem:
        raise OutputError(problem) from error


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def discard(staging: str) -> None:
    """Drop a failed run's staging folder (best effort: the next run into the output removes a leftover)."""
    run = (read_marker(staging) or {}).get("run")
    try:
        remove_tree(staging)
    except Exception:  # never mask the error that made us discard
        import logging

        logging.getLogger("speechid").warning("could not remove %s", staging)
        return
    if run:
        _forget(run)


def remove_tree(path: str) -> None:
    """Delete a folder this process wrote, on any filesystem, if it exists (object stores: by its files).
    The marker goes last, so a removal cut short leaves a folder ``recover`` still recognises."""
    files = list_files(path)
    rest = [f for f in files if f != MARKER]
    if is_local(path):
        for rel in rest:
            os.unlink(os.path.join(path, rel))
        if os.path.lexists(path):
            shutil.rmtree(path)
        return
    if rest:
        _filesystems().delete([_join(path, f) for f in rest])
    if MARKER in files:
        _filesystems().delete([_join(path, MARKER)])
