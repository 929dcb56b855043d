"""The one output guard (speechid.outputs): whose folder it is, where it may go, what a replace deletes.

Local folders are real temp dirs; the object-store path runs on a small in-memory Beam filesystem
(``memtest://``) that, like GCS, has no folders and no rename.
"""

import io
import json
import os
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


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


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


def test_the_staging_of_a_killed_run_is_removed_by_the_next_success(tmp_path):
    out = str(tmp_path / "out")
    killed = outputs.stage(out, "prep")  # a run killed before it could publish or discard
    marker = outputs.read_marker(killed)
    outputs.write_json(os.path.join(killed, outputs.MARKER), {**marker, "pid": _dead_pid()})
    running = outputs.stage(out, "prep")  # a run of this process: still going, must be left alone
    other = outputs.stage(out, "embed")  # another command's (dead) staging: not ours to judge
    outputs.write_json(os.path.join(other, outputs.MARKER), {**outputs.read_marker(other), "pid": _dead_pid()})
    stranger = tmp_path / "out.tmp-0badc0de"  # no marker: someone else's folder that looks alike
    stranger.mkdir()
    (stranger / "keep.txt").write_text("x")
    _publish_files(out, "prep", {"a.txt": b"1"})
    assert sorted(os.listdir(tmp_path)) == sorted(["out", os.path.basename(running), os.path.basename(other),
                                                   stranger.name])


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
