"""prep and embed on a loopback dask cluster give what the local runner gives, and survive a killed worker.

A Common Voice-style archive with planted faults is prepared and embedded twice, on Beam's local runner
and through ``--runner DaskRunner --dask_client_address`` on a cluster of 2 worker processes (127.0.0.1
only, torn down by the fixture): same manifest, same records and failures, same tf.Transform statistics,
embeddings within 1e-6. Then one worker process is killed as it starts decoding clips: dask runs its tasks
again elsewhere and the output is still exactly the local runner's. The cluster is ``dask_client``
(conftest.py).
"""

import dataclasses
import glob
import json
import os
import signal

import numpy as np
import pytest
from distributed import WorkerPlugin

from speechid import schema
from speechid.corpora import synth
from speechid.pipelines import embed, prep

# What differs between two runs of the same job: when it ran and where it wrote.
RUN_FIELDS = ("created_unix", "output")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synth.make_corpus(str(tmp_path_factory.mktemp("dask_corpus")), speakers=4, clips_per_speaker=2, seed=21,
                             plant_faults=True, extra_fraction=0.2, min_duration=1.0, max_duration=2.0, workers=1)


@pytest.fixture(scope="module")
def local_prep(corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("local_prep") / "data")
    prep.run(["--input", corpus.tarball, "--output", out])
    return out


@pytest.fixture
def model_dir(tiny_model_dir):
    return tiny_model_dir


def on_dask(client) -> list[str]:
    return ["--runner", "DaskRunner", "--dask_client_address", client.scheduler.address]


def manifest(out: str) -> dict:
    with open(os.path.join(out, schema.MANIFEST)) as f:
        return {k: v for k, v in json.load(f).items() if k not in RUN_FIELDS}


def records(out: str) -> dict[str, list[bytes]]:
    """Every split's serialized records, sorted (shard files and their order are the runner's choice)."""
    import tensorflow as tf

    found = {}
    for split in schema.SPLITS:
        files = sorted(glob.glob(schema.record_pattern(out, split)))
        # Parsed, not compared as bytes: an Example's feature map is serialized in no fixed order.
        parsed = [schema.from_example(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
        found[split] = sorted((tuple(getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "audio"),
                               r.audio.tobytes()) for r in parsed)
    return found


def failures(out: str) -> list[str]:
    return sorted(line for f in glob.glob(os.path.join(out, schema.FAILURES_DIR, "*.jsonl"))
                  for line in open(f) if line.strip())


def assert_same_prep(out: str, reference: str) -> None:
    from speechid.model.stats import load_stats

    m = manifest(out)
    assert m == manifest(reference) and m["reconciliation"]["balanced"]
    got = records(out)
    assert got == records(reference)
    for split, recs in got.items():  # no record twice
        ids = [fields[0] for fields, _ in recs]
        assert len(ids) == len(set(ids)) == m["records"][split]
    assert failures(out) == failures(reference) and failures(out)
    stats, ref = load_stats(out), load_stats(reference)
    assert stats.speakers == ref.speakers and stats.frames == ref.frames
    np.testing.assert_allclose(stats.mel_mean, ref.mel_mean, rtol=1e-6)
    np.testing.assert_allclose(stats.mel_var, ref.mel_var, rtol=1e-6)


def test_prep_on_dask_matches_the_local_runner(dask_client, corpus, local_prep, tmp_path):
    out = str(tmp_path / "data")
    result = prep.run(["--input", corpus.tarball, "--output", out, *on_dask(dask_client)])
    assert result.balanced
    assert result.metrics["records_written"] == sum(result.manifest["records"].values())  # metrics come back
    assert_same_prep(out, local_prep)
    assert not glob.glob(str(tmp_path / "*.tmp-*")) and sorted(os.listdir(tmp_path)) == ["data"]


def test_embed_on_dask_matches_the_local_runner(dask_client, corpus, model_dir, tmp_path):
    import pyarrow.parquet as pq

    tables = {}
    for name, flags in (("local", []), ("dask", on_dask(dask_client))):
        out = str(tmp_path / name)
        m = embed.run(["--model", model_dir, "--input", corpus.tarball, "--output", out, *flags])
        assert m["reconciles"] and m["clips_written"]
        rows = pq.read_table(sorted(glob.glob(os.path.join(out, "part-*.parquet")))).to_pylist()
        tables[name] = ({k: v for k, v in m.items() if k != "output"}, {r["clip_id"]: r for r in rows})
    (m_local, local), (m_dask, dask) = tables["local"], tables["dask"]
    assert m_dask == m_local and dask.keys() == local.keys()
    for clip_id, row in dask.items():
        np.testing.assert_allclose(row["embedding"], local[clip_id]["embedding"], atol=1e-6)
        assert {k: v for k, v in row.items() if k != "embedding"} == {
            k: v for k, v in local[clip_id].items() if k != "embedding"}


class KillOnce(WorkerPlugin):
    """Kills its worker process (SIGKILL) as it starts executing a task of ``stage``, once in the cluster: the
    first worker to create ``flag`` dies; the process the nanny starts in its place finds the flag and
    lives."""

    def __init__(self, stage: str, flag: str):
        self.stage = stage
        self.flag = flag

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith(f"{self.stage}-"):
            return
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        with open(self.flag, "w") as f:
            f.write(f"{os.getpid()} {key}")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_during_prep_loses_and_repeats_nothing(dask_client, corpus, local_prep, tmp_path):
    # Pass 2 (GroupByRange: read ranges, decode, write records) runs on the worker that dies: dask runs that
    # task again on the other worker, and recomputes whatever the dead one held that is still needed.
    flag = str(tmp_path / "killed")
    pids = set(dask_client.run(os.getpid).values())
    dask_client.register_plugin(KillOnce("GroupByRange", flag), name="kill-once")
    try:
        out = str(tmp_path / "data")
        result = prep.run(["--input", corpus.tarball, "--output", out, *on_dask(dask_client)])
    finally:
        dask_client.unregister_worker_plugin("kill-once")
    with open(flag) as f:
        killed_pid, key = f.read().split(" ", 1)
    assert int(killed_pid) in pids and key.startswith("GroupByRange-")
    dask_client.wait_for_workers(2, timeout=60)  # the nanny started a new process in its place
    assert int(killed_pid) not in dask_client.run(os.getpid).values()
    assert result.balanced
    assert_same_prep(out, local_prep)
