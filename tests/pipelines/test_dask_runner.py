"""speechid's DaskRunner, feature by feature, against a loopback dask cluster on in-memory data.

Every Beam feature prep and embed use has a small pipeline here (the ones Beam 2.77's own DaskRunner gets
wrong first: tagged outputs, several sinks, finish_bundle outputs, Read, side inputs computed once), plus
what the runner refuses and how a job is cancelled. One loopback cluster (``dask_client`` in conftest.py:
2 worker processes, 1 thread each, 127.0.0.1 only) serves them all.
"""

import glob
import os
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from speechid.errors import ConfigError
from speechid.pipelines.dask_runner import DaskRunner, UnsupportedPipeline
from speechid.pipelines.flags import check_pipeline_args
from speechid.pipelines.runner import make_pipeline, run_and_wait


@pytest.fixture
def client(dask_client):
    return dask_client


def dask_pipeline(client, *flags: str) -> TestPipeline:
    from apache_beam.options.pipeline_options import PipelineOptions

    return TestPipeline(runner=DaskRunner(client=client), options=PipelineOptions(list(flags)))


def run_pipeline(p):
    result = p.run()
    result.wait_until_finish()
    return result


class SplitParity(beam.DoFn):
    def process(self, x):
        yield x if x % 2 == 0 else beam.pvalue.TaggedOutput("odd", x)


def test_every_output_tag_is_its_own_pcollection(client):
    with dask_pipeline(client) as p:
        out = p | beam.Create(range(10)) | beam.ParDo(SplitParity()).with_outputs("odd", main="even")
        assert_that(out.even, equal_to([0, 2, 4, 6, 8]), label="Even")
        assert_that(out.odd, equal_to([1, 3, 5, 7, 9]), label="Odd")


def test_two_sinks_both_written_and_no_temp_folders_left(client, tmp_path):
    with dask_pipeline(client) as p:
        words = p | beam.Create(["a", "b", "c"])
        _ = words | "One" >> beam.io.WriteToText(str(tmp_path / "one"), num_shards=2)  # fixed count: a shuffle
        _ = words | "Upper" >> beam.Map(str.upper) | "Two" >> beam.io.WriteToText(str(tmp_path / "two"))
    one = sorted(glob.glob(str(tmp_path / "one-*")))
    assert [os.path.basename(f) for f in one] == ["one-00000-of-00002", "one-00001-of-00002"]
    assert sorted(line for f in one for line in open(f).read().split()) == ["a", "b", "c"]
    assert sorted(line for f in glob.glob(str(tmp_path / "two-*")) for line in open(f).read().split()) == [
        "A", "B", "C"]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(f) for f in glob.glob(str(tmp_path / "*-*")))


class EmitAtFinish(beam.DoFn):
    """Emits only in finish_bundle: what Beam's DaskRunner dropped."""

    def start_bundle(self):
        self._n = 0

    def process(self, x):
        self._n += 1

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        yield WindowedValue(self._n, GlobalWindow().max_timestamp(), [GlobalWindow()])


def test_finish_bundle_outputs_are_kept(client):
    with dask_pipeline(client) as p:
        nums = p | beam.Create(range(25))
        counted = nums | beam.ParDo(EmitAtFinish()) | "SumCounts" >> beam.CombineGlobally(sum)
        assert_that(counted, equal_to([25]), label="Counted")
        batched = (nums | beam.BatchElements(min_batch_size=4, max_batch_size=4)
                   | "Sizes" >> beam.Map(len) | "SumSizes" >> beam.CombineGlobally(sum))
        assert_that(batched, equal_to([25]), label="Batched")


class Times:
    def __init__(self, k):
        self.k = k


class Doubler(ModelHandler):
    def load_model(self):
        return Times(2)  # RunInference shares the model through a weak reference: an int would not do

    def run_inference(self, batch, model, inference_args=None):
        return [PredictionResult(x, x * model.k) for x in batch]


def test_run_inference_returns_every_element(client):
    with dask_pipeline(client) as p:
        out = (p | beam.Create([1, 2, 3]) | RunInference(Doubler()) | beam.Map(lambda r: r.inference))
        assert_that(out, equal_to([2, 4, 6]))


def test_write_to_parquet_writes_every_row(client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
    rows = [{"k": str(i), "v": i} for i in range(7)]
    with dask_pipeline(client) as p:
        _ = p | beam.Create(rows) | beam.io.WriteToParquet(str(tmp_path / "part"), schema, file_name_suffix=".parquet")
    table = pq.read_table(sorted(glob.glob(str(tmp_path / "part-*.parquet"))))
    assert sorted(table.to_pylist(), key=lambda r: r["v"]) == rows
    assert all(name.startswith("part-") for name in os.listdir(tmp_path))


def test_read_tfrecord_splits_the_source(client, tmp_path):
    records = [f"r{i}".encode() for i in range(30)]
    with dask_pipeline(client) as p:
        _ = p | beam.Create(records) | beam.io.WriteToTFRecord(str(tmp_path / "rec"), num_shards=3)
    with dask_pipeline(client) as p:
        assert_that(p | beam.io.ReadFromTFRecord(str(tmp_path / "rec-*")), equal_to(records))


def test_side_inputs_singleton_dict_iterable_computed_once(client):
    made = beam.metrics.Metrics.counter("test", "side_values_made")

    def make(x):
        made.inc()
        return x

    p = dask_pipeline(client)
    side = p | "Side" >> beam.Create([("a", 1), ("b", 2)]) | "Make" >> beam.Map(make)
    total = side | beam.Map(lambda kv: kv[1]) | beam.CombineGlobally(sum)
    nums = p | "Nums" >> beam.Create([10, 20])
    out = nums | beam.Map(lambda x, d, it, s: x + d["a"] + sum(v for _, v in it) + s,
                          beam.pvalue.AsDict(side), beam.pvalue.AsIter(side), beam.pvalue.AsSingleton(total))
    listed = nums | "AsList" >> beam.Map(lambda x, values: (x, sorted(values)), beam.pvalue.AsList(side))
    assert_that(out, equal_to([10 + 1 + 3 + 3, 20 + 1 + 3 + 3]), label="Out")
    assert_that(listed, equal_to([(10, [("a", 1), ("b", 2)]), (20, [("a", 1), ("b", 2)])]), label="Listed")
    result = run_pipeline(p)
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("side_values_made"))["counters"]
    assert sum(c.committed for c in counters) == 2  # each side value made once, though read by three steps


def test_co_group_by_key(client):
    with dask_pipeline(client) as p:
        left = p | "L" >> beam.Create([("a", 1), ("b", 2), ("a", 3)])
        right = p | "R" >> beam.Create([("a", "x"), ("c", "y")])
        joined = ({"l": left, "r": right} | beam.CoGroupByKey()
                  | beam.MapTuple(lambda k, g: (k, sorted(g["l"]), sorted(g["r"]))))
        assert_that(joined, equal_to([("a", [1, 3], ["x"]), ("b", [2], []), ("c", [], ["y"])]))


def test_combine_globally_on_empty_input_gives_the_default(client):
    with dask_pipeline(client) as p:
        assert_that(p | beam.Create([]) | beam.CombineGlobally(sum), equal_to([0]), label="Sum")
        counted = p | "Empty" >> beam.Create([]) | beam.combiners.Count.Globally()
        assert_that(counted, equal_to([0]), label="Count")


def test_tf_transform_analyze_and_transform_dataset(client, tmp_path):
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    def preprocessing_fn(inputs):
        return {"z": tft.scale_to_z_score(inputs["x"]),
                "id": tft.compute_and_apply_vocabulary(inputs["s"], vocab_filename="ids")}

    rows = [{"x": float(v), "s": s} for v, s in [(1, "a"), (2, "b"), (3, "a"), (6, "c")]]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
        {"x": tf.io.FixedLenFeature([], tf.float32), "s": tf.io.FixedLenFeature([], tf.string)}))
    with dask_pipeline(client) as p, tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        data = p | beam.Create(rows)
        (transformed, _), transform_fn = (data, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
        z = transformed | beam.Map(lambda r: round(float(r["z"]), 4))
        assert_that(z, equal_to([round((v - 3.0) / np.sqrt(3.5), 4) for v in (1, 2, 3, 6)]))
    vocab = tft.TFTransformOutput(str(tmp_path / "out")).vocabulary_by_name("ids")
    assert vocab[0] == b"a" and sorted(vocab) == [b"a", b"b", b"c"]


class Stateful(beam.DoFn):
    COUNT = beam.transforms.userstate.CombiningValueStateSpec("n", sum)

    def process(self, kv, n=beam.DoFn.StateParam(COUNT)):
        n.add(1)
        yield kv


def test_state_timers_and_unbounded_sources_are_refused_before_running(client):
    from apache_beam.testing.test_stream import TestStream

    p = dask_pipeline(client)
    _ = p | beam.Create([("a", 1)]) | beam.ParDo(Stateful())
    with pytest.raises(UnsupportedPipeline, match="state or timers"):
        p.run()
    p = dask_pipeline(client, "--streaming")
    _ = p | TestStream().add_elements([1])
    with pytest.raises(UnsupportedPipeline, match="bounded"):
        p.run()


class Slow(beam.DoFn):
    def process(self, x):
        time.sleep(0.05)
        yield x


def _tasks(client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def test_ctrl_c_cancels_the_job_on_the_cluster(client, monkeypatch):
    import _thread

    # The cluster's processes are this test's own.
    monkeypatch.setattr("speechid.pipelines.runner.stop_child_processes", lambda: [])
    # 400 elements of 50 ms in 16 partitions: 10 s of work for the 2 workers, 1.25 s a task.
    from apache_beam.options.pipeline_options import PipelineOptions

    # A plain Pipeline, as prep and embed build: TestPipeline.run() would wait for the job itself.
    p = beam.Pipeline(runner=DaskRunner(client=client), options=PipelineOptions(["--dask_npartitions", "16"]))
    _ = p | beam.Create(range(400)) | beam.ParDo(Slow())

    def interrupt_once_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(client.processing().values()):
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_and_wait(p)
    interrupted = time.monotonic()
    while _tasks(client) and time.monotonic() - interrupted < 20:
        time.sleep(0.1)
    # Only the tasks already running finish; the scheduler forgets the rest at once.
    assert _tasks(client) == 0 and time.monotonic() - interrupted < 5


def test_runner_flags_are_known_and_a_missing_scheduler_is_one_line():
    check_pipeline_args(["--runner", "DaskRunner", "--dask_client_address", "127.0.0.1:1"])
    p = make_pipeline(["--runner", "DaskRunner", "--dask_client_address", "127.0.0.1:1",
                            "--dask_connection_timeout", "1"])
    assert isinstance(p.runner, DaskRunner)
    _ = p | beam.Create([1])
    with pytest.raises(ConfigError, match="--dask_client_address 127.0.0.1:1: cannot reach a dask scheduler"):
        p.run()
