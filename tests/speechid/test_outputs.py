"""The one output guard (speechid.outputs): whose folder it is, where it may go, what a replace deletes.

Local folders are real temp dirs; the object-store path runs on a small in-memory Beam filesystem
(``memtest://``) that, like GCS, has no folders and no rename.
"""

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from apache_beam.io.filesystem import CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from speechid import outputs
from speechid.errors import OutputError
from tests.conftest import tree_digest


def _publish_files(output: str, command: str, files: dict[str, bytes], inputs=()) -> str:
    staging = outputs.stage(output, command, inputs)
    for rel, data in files.items():
        path = outputs._join(staging, rel)
        if outputs.is_local(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        else:
            with FileSystems.create(path) as f:
                f.write(data)
    outputs.publish(staging, output, command)
    return staging


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path_factory, monkeypatch):
    """speechid records its runs' staging folders under XDG_STATE_HOME: keep these tests' records to themselves."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


# A run of `command` into `output` in its own process, killed (os._exit: no clean-up, no handler) at `kill_at`:
# "staged" (before publishing), "second rename" (the old result moved aside, the new one not yet in place) or
# "removing old" (the new result in place, the old one not yet removed). Prints the staging folder it made.
_KILLED_RUN = """
import os, shutil, sys
from speechid import outputs
output, command, kill_at = sys.argv[1:]
staging = outputs.stage(output, command)
print(staging, flush=True)
with open(os.path.join(staging, "new.txt"), "w") as f:
    f.write("new")
if kill_at == "staged":
    os._exit(9)
renames, rename = [], os.rename
def kill_at_second_rename(src, dst):
    renames.append(src)
    if kill_at == "second rename" and len(renames) == 2:
        os._exit(9)
    rename(src, dst)
os.rename = kill_at_second_rename
if kill_at == "removing old":
    shutil.rmtree = lambda *a, **k: os._exit(9)
outputs.publish(staging, output, command)
"""


def _killed_run(output: str, command: str, kill_at: str) -> str:
    """Run ``_KILLED_RUN``; returns the staging folder the killed run made."""
    p = subprocess.run([sys.executable, "-c", _KILLED_RUN, output, command, kill_at], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 9, p.stderr
    return p.stdout.strip()


def test_a_users_folder_is_refused_and_left_as_it_was(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    before = tree_digest(tmp_path)
    with pytest.raises(OutputError, match=r"--output .*mine: not empty and not written by `speechid prep`"):
        outputs.stage(str(mine), "prep")
    assert tree_digest(tmp_path) == before  # no staging folder either


def test_an_output_that_holds_an_input_or_lies_inside_one_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.tar.gz").write_bytes(b"x")
    data = tmp_path / "data"
    data.mkdir()
    cases = [
        (corpus, [str(corpus / "a.tar.gz")], "contains the input"),
        (tmp_path, [str(corpus / "a.tar.gz")], "contains the input"),
        (data, [str(data)], "is the input"),
        (data / "sub", [str(data)], "is inside the input"),
        (corpus, [str(corpus / "*.tar.gz")], "contains the input"),  # a glob's files are under its root
    ]
    for output, inputs, what in cases:
        with pytest.raises(OutputError, match=what):
            outputs.check_output(str(output), "prep", inputs)
    # A sibling folder, or a folder beside the archives, is fine.
    assert outputs.check_output(str(corpus / "out"), "prep", [str(corpus / "a.tar.gz")])
    assert outputs.check_output(str(tmp_path / "out"), "prep", [str(data)])


def test_only_the_commands_own_output_is_replaced_and_only_its_files_are_deleted(tmp_path):
    out = tmp_path / "out"
    _publish_files(str(out), "prep", {"a.txt": b"1", "sub/b.txt": b"2"})
    marker = outputs.read_marker(str(out))
    assert marker["command"] == "prep" and marker["files"] == ["a.txt", "sub/b.txt"]
    _publish_files(str(out), "prep", {"c.txt": b"3"})  # a rerun replaces the whole previous result
    assert sorted(os.listdir(out)) == [outputs.MARKER, "c.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing left beside it

    with pytest.raises(OutputError, match="holds the output of `speechid prep`, not of `speechid embed`"):
        outputs.stage(str(out), "embed")
    (out / "mine.txt").write_text("added by hand")
    before = tree_digest(tmp_path)
    with pytest.raises(OutputError, match=r"holds files `speechid prep` did not write \(mine.txt\)"):
        outputs.stage(str(out), "prep")
    assert tree_digest(tmp_path) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        outputs.stage(str(tmp_path / "file"), "prep")


def test_the_staging_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    out = str(tmp_path / "out")
    killed = _killed_run(out, "prep", "staged")  # killed before it could publish or discard
    assert os.path.isdir(killed)
    running = outputs.stage(out, "prep")  # a run of this process: still going, must be left alone
    assert not os.path.exists(killed)  # removed as the next run starts
    other = _killed_run(out, "embed", "staged")  # another command's: its record still says it is speechid's
    stranger = tmp_path / "out.tmp-0badc0de"  # no marker: someone else's folder that looks alike
    stranger.mkdir()
    (stranger / "keep.txt").write_text("x")
    assert os.path.isdir(other)
    _publish_files(out, "prep", {"a.txt": b"1"})
    assert sorted(os.listdir(tmp_path)) == sorted(["out", os.path.basename(running), stranger.name])


@pytest.mark.parametrize("kill_at", ["second rename", "removing old"])
def test_a_run_killed_while_publishing_is_undone_or_finished_by_the_next_run(tmp_path, kill_at):
    out = str(tmp_path / "out")
    _publish_files(out, "prep", {"a.txt": b"old"})
    killed = _killed_run(out, "prep", kill_at)
    left = sorted(os.listdir(tmp_path))
    if kill_at == "second rename":  # the old result moved aside, the new one still staged: no output at all
        assert len(left) == 2 and os.path.basename(killed) in left and ".old-" in "".join(left)
        staging = outputs.stage(out, "prep")  # the next run puts the old result back before it looks at it
        with open(os.path.join(out, "a.txt")) as f:
            assert f.read() == "old"
        assert sorted(os.listdir(tmp_path)) == sorted(["out", os.path.basename(staging)])
        outputs.discard(staging)
    else:  # the new result in place, the old one beside it
        assert len(left) == 2 and "out" in left and ".old-" in "".join(left)
    _publish_files(out, "prep", {"b.txt": b"next"})
    assert sorted(os.listdir(tmp_path)) == ["out"] and sorted(os.listdir(out)) == [outputs.MARKER, "b.txt"]


def test_a_users_copy_of_an_output_or_of_a_staging_folder_survives_every_run(tmp_path):
    # `speechid index --output idx; mv idx idx.old-mine; echo notes > idx.old-mine/NOTES.txt`, then a rerun;
    # `cp -a idx idx.old-backup`: the copies carry the folder's marker, and are still the user's.
    out = tmp_path / "idx"
    _publish_files(str(out), "index build", {"a.txt": b"1"})
    os.rename(out, tmp_path / "idx.old-mine")
    (tmp_path / "idx.old-mine" / "NOTES.txt").write_text("notes")
    _publish_files(str(out), "index build", {"a.txt": b"2"})
    assert (tmp_path / "idx.old-mine" / "NOTES.txt").read_text() == "notes"
    shutil.copytree(out, tmp_path / "idx.old-backup", symlinks=True)
    shutil.copytree(out, tmp_path / "idx.tmp-backup", symlinks=True)
    killed = _killed_run(str(out), "index build", "staged")
    shutil.copytree(killed, tmp_path / "idx.tmp-copy", symlinks=True)  # a copy of a dead run's staging folder
    _killed_run(str(out), "index build", "removing old")  # its old folder is removed by the next run; copies stay
    mine = ["idx.old-mine", "idx.old-backup", "idx.tmp-backup", "idx.tmp-copy"]
    before = {name: tree_digest(tmp_path / name) for name in mine}
    for data in (b"3", b"4"):
        _publish_files(str(out), "index build", {"a.txt": data})
        assert sorted(os.listdir(tmp_path)) == sorted(["idx", *mine])
        assert {name: tree_digest(tmp_path / name) for name in mine} == before


def test_an_unwritable_output_is_named_as_given_not_by_its_staging_folder(tmp_path):
    for bad in ("/proc/speechid-test/x", str(tmp_path / "file" / "x")):
        (tmp_path / "file").write_text("x")
        with pytest.raises(OutputError) as e:
            outputs.stage(bad, "embed")
        assert str(e.value).startswith(f"--output {bad}: cannot write there") and ".tmp-" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_claim_marks_a_new_folder_and_refuses_others(tmp_path):
    model = tmp_path / "model"
    assert outputs.claim(str(model), "train", flag="--model-dir") == str(model)
    assert outputs.read_marker(str(model))["command"] == "train"
    (model / "metrics.json").write_text("{}")  # written in place later: claiming again is fine
    outputs.claim(str(model), "train", flag="--model-dir")
    with pytest.raises(OutputError, match=r"^--model-dir .*: holds the output of `speechid train`"):
        outputs.claim(str(model), "prep", flag="--model-dir")


# -- object stores ----------------------------------------------------------------------------------------


class MemoryFileSystem(FileSystem):
    """memtest://bucket/key: a flat key -> bytes store, like GCS or S3 (no folders, no rename)."""

    objects: dict[str, bytes] = {}

    @classmethod
    def scheme(cls):
        return "memtest"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for path, data in sorted(self.objects.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data))

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        objects = self.objects

        class Writer(io.BytesIO):
            def close(self):
                objects[path] = self.getvalue()
                super().close()

        return Writer()

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        if path not in self.objects:
            raise FileNotFoundError(path)
        return io.BytesIO(self.objects[path])

    def copy(self, sources, destinations):
        for src, dst in zip(sources, destinations, strict=True):
            self.objects[dst] = self.objects[src]

    def rename(self, sources, destinations):
        raise NotImplementedError("object stores have no rename")

    def exists(self, path):
        return path in self.objects

    def size(self, path):
        return len(self.objects[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(hash(self.objects[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.objects[path]))

    def delete(self, paths):
        for path in paths:
            del self.objects[path]


@pytest.fixture
def store():
    MemoryFileSystem.objects.clear()
    yield MemoryFileSystem.objects
    MemoryFileSystem.objects.clear()


def test_on_an_object_store_a_replace_deletes_only_the_listed_objects(store):
    store["memtest://b/out/notes.txt"] = b"a user's object"
    store["memtest://b/out-archive/keep"] = b"a neighbour that shares the prefix string"
    with pytest.raises(OutputError, match="not written by `speechid embed`"):
        outputs.stage("memtest://b/out", "embed")
    del store["memtest://b/out/notes.txt"]

    _publish_files("memtest://b/out", "embed", {"part-0.parquet": b"1", "failures/f.jsonl": b"2"})
    assert json.loads(store["memtest://b/out/" + outputs.MARKER])["files"] == ["failures/f.jsonl", "part-0.parquet"]
    _publish_files("memtest://b/out", "embed", {"part-1.parquet": b"3"})
    assert sorted(store) == ["memtest://b/out-archive/keep", "memtest://b/out/" + outputs.MARKER,
                             "memtest://b/out/part-1.parquet"]  # old parts gone, staging gone, neighbour kept

    store["memtest://b/out/mine.txt"] = b"added by hand"
    before = dict(store)
    with pytest.raises(OutputError, match=r"did not write \(mine.txt\)"):
        outputs.stage("memtest://b/out", "embed")
    assert store == before
    with pytest.raises(OutputError, match="contains the input"):
        outputs.check_output("memtest://b", "embed", ["memtest://b/in/*.wav"])


def test_a_run_never_publishes_what_it_read_from_an_input_replaced_meanwhile(tmp_path):
    src, out = str(tmp_path / "corpus"), str(tmp_path / "out")
    _publish_files(src, "prep", {"train-0.rec": b"first"})
    staging = outputs.stage(out, "embed", [os.path.join(src, "train-0.rec")])  # a file inside a speechid output
    _publish_files(src, "prep", {"train-0.rec": b"second"})  # another job publishes into the input meanwhile
    with pytest.raises(OutputError, match=r"corpus was replaced by another `speechid prep` run while this run "
                                          r"read it; nothing was published"):
        outputs.publish(staging, out, "embed")
    assert not os.path.exists(out)
    outputs.discard(staging)

    read = outputs.snapshot([src])  # a command that stages only after reading takes the snapshot first
    shutil.rmtree(src)
    with pytest.raises(OutputError, match="corpus was removed while this run read it"):
        with outputs.staged(out, "dedup", [src], read=read):
            pass
    assert not os.path.exists(out) and os.listdir(tmp_path) == []  # its staging folder is gone too

    _publish_files(src, "prep", {"train-0.rec": b"third"})
    with outputs.staged(out, "embed", [src]) as staging:  # unchanged while it ran: published
        open(os.path.join(staging, "part-0"), "w").close()
    assert outputs.read_marker(out)["inputs_read"] == outputs.snapshot([src])


def test_a_failure_while_an_input_was_replaced_is_reported_as_the_replacement(tmp_path):
    src, out = str(tmp_path / "corpus"), str(tmp_path / "out")
    _publish_files(src, "synth", {"a.tar.gz": b"first"})
    with pytest.raises(OutputError, match="replaced by another `speechid synth` run") as caught:
        with outputs.staged(out, "embed", [os.path.join(src, "a.tar.gz")]):
            _publish_files(src, "synth", {"b.tar.gz": b"other"})
            open(os.path.join(src, "a.tar.gz"))  # the file it was reading is gone: FileNotFoundError
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert sorted(os.listdir(tmp_path)) == ["corpus"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("Pipeline failed: OSError: [Errno 28] No space left on device")])
def test_a_full_disk_is_one_line_naming_the_output(tmp_path, error):
    out = str(tmp_path / "out")
    with pytest.raises(OutputError) as caught:
        with outputs.staged(out, "prep") as staging:
            with open(os.path.join(staging, "part-0"), "wb") as f:
                f.write(b"x" * 2_500)
            raise error  # as a writer (or Beam, re-raising a worker's error as text) reports it
    message = str(caught.value)
    assert message.startswith(f"{out}: the disk filled up") and "needs more than 2.5 KB free" in message
    assert outputs.STAGING_INFIX not in message and os.listdir(tmp_path) == []


def test_a_mount_point_is_refused_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(out) or real(p))
    with pytest.raises(OutputError, match="is a mount point.*choose a folder inside it"):
        outputs.stage(str(out), "prep")
    assert os.listdir(tmp_path) == ["mnt"]
    assert outputs.claim(str(out), "train") == str(out)  # a command writing in place may use it


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_and_a_real_mount_point(tiny_disk, tmp_path, capsys):
    from tests.conftest import run_cli

    with pytest.raises(OutputError, match="is a mount point"):
        outputs.stage(str(tiny_disk), "synth")
    out = str(tiny_disk / "corpus")
    code, err, _ = run_cli(["synth", out, "--speakers", "10", "--clips-per-speaker", "4"], capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{out}: the disk filled up" in err[0] and "nothing was published" in err[0]
    assert os.listdir(tiny_disk) == []  # the staging folder is gone, the disk is free again

    from speechid.corpora import synth

    corpus = synth.make_corpus(str(tmp_path / "corpus"), speakers=3, clips_per_speaker=2, seed=5, min_duration=1.0,
                               max_duration=2.0, extra_fraction=0.0, workers=1)
    out = str(tiny_disk / "data")
    code, err, _ = run_cli(["prep", "--input", corpus.tarball, "--output", out], capsys)  # Beam + tf.Transform
    assert code == 2 and len(err) == 1, err
    assert f"{out}: the disk filled up" in err[0] and "Traceback" not in err[0]
    assert os.listdir(tiny_disk) == []
