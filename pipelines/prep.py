"""Prep: Common Voice archives -> sharded GZIP TFRecords per split, tf.Transform analysis, failures, manifest.

    archives --ReadArchives (pass 1: stream each once)--> TSV rows + clip member places + a gzip seek index
             --JoinRowsToClips (CoGroupByKey of small elements)--> (row, member place) pairs | failures | counts
             --ReadClipRanges (pass 2: GroupByKey by archive range; every worker seeks into the archive)-->
               (row, clip bytes), read and decoded on the same worker: no audio byte is shuffled
             --DecodeClips (speechid.audio -> speechid.schema.to_example)--> one output per split
             --AnalyzeTrain--> tf.Transform: per-mel-bin log-mel mean/var + speaker vocabulary (train split)
    written as <output>/<split>-SSSSS-of-NNNNN.tfrecord.gz, transform_fn/, transformed_metadata/,
    failures/failures-*.jsonl and manifest.json, staged beside <output> and renamed into place at the end.

``run`` is the job: it reads the archives (``ReadArchives``), applies one composite (``PrepCorpus``: every
stage between reading and writing) and writes its outputs; ``embed`` has the same shape.

Local run (``DirectRunner``, the default: Beam's local Python runner, see ``speechid.pipelines.runner``;
``--direct_running_mode multi_processing --direct_num_workers 2`` for one worker per core)::

    python -m speechid.pipelines.prep --input data/cv-corpus-synth-en.tar.gz --output data/synth \\
        --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2

Dataflow::

    python -m speechid.pipelines.prep --input gs://BUCKET/cv/*.tar.gz --output gs://BUCKET/data/cv \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py

A dask.distributed cluster (``speechid.pipelines.dask_runner``; README "Scaling out")::

    python -m speechid.pipelines.prep --input /shared/cv/*.tar.gz --output /shared/data/cv \\
        --runner DaskRunner --dask_client_address SCHEDULER:8786
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import speechid
from speechid import audio, outputs, schema
from speechid.config import SAMPLE_RATE
from speechid.errors import InputError
from speechid.pipelines.archive_inputs import check_archives, match_archives
from speechid.pipelines.archives import (
    INDEXES,
    PAIRS,
    SEEK_INDEX_DIR,
    JoinRowsToClips,
    ReadArchives,
    ReadClipRanges,
)
from speechid.pipelines.failures import FAILURES, WriteFailures, failure_events
from speechid.pipelines.flags import JobFlags, check_pipeline_args
from speechid.pipelines.manifest import (
    EVENTS,
    MANIFEST,
    BuildManifest,
    WriteManifest,
    prep_manifest,
    publish_problem,
    read_manifest,
)
from speechid.pipelines.metrics import PREP, log_metrics
from speechid.pipelines.prep_stages import AnalyzeTrain, DecodeClips, PrepConfig, pin_malloc_thresholds
from speechid.pipelines.records import WriteGzipTFRecords
from speechid.pipelines.runner import local_worker_count, local_worker_processes, make_pipeline, run_job
from speechid.pipelines.workers import SINGLE_THREADED_TF

_LOG = logging.getLogger(__name__)
COMMAND = "prep"  # the name its output folders are marked with (speechid.outputs)
TRANSFORM_FN_KEY = "transform_fn"
_TFT_TEMP_DIR = "_tft_tmp"  # tf.Transform's temporary files, in the staging folder


# glibc reads these when a process starts: local worker processes spawned during a run get fixed malloc
# thresholds from their first allocation on (pin_malloc_thresholds, called from DoFn.setup for the other
# runners, only takes effect once a worker already has a history of frees).
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_TRIM_THRESHOLD_": str(256 * 1024)}


class PrepCorpus(beam.PTransform):
    """The whole prep between reading and writing. Input: the dict ``ReadArchives`` returns. Output: a
    dict with one PCollection of serialized Examples per selected split, ``failures`` (Failure),
    ``manifest`` (one dict) and, when train is selected, ``transform_fn`` (tf.Transform's pair)."""

    def __init__(self, config: PrepConfig, run_info: dict, tft_temp_dir: str):
        super().__init__()
        self._config = config
        self._run_info = run_info
        self._tft_temp_dir = tft_temp_dir

    def expand(self, read):
        joined = read | "JoinRowsToClips" >> JoinRowsToClips()
        # Ranges are spread over the workers by the GroupByKey; decoding is fused with reading the range.
        clips = {PAIRS: joined[PAIRS], INDEXES: read[INDEXES]} | "ReadClipRanges" >> ReadClipRanges(
            self._config.max_clip_bytes, namespace=PREP
        )
        expected = joined[PAIRS] | "CountClipsToDecode" >> beam.combiners.Count.Globally()  # for progress lines
        decoded = clips[PAIRS] | "DecodeClips" >> DecodeClips(self._config, expected)
        failures = (read[FAILURES], joined[FAILURES], clips[FAILURES], decoded[FAILURES]) | "AllFailures" >> (
            beam.Flatten()
        )
        events = (
            read[EVENTS],
            joined[EVENTS],
            decoded[EVENTS],
            failures | "FailureEvents" >> beam.FlatMap(failure_events),
        ) | "AllEvents" >> beam.Flatten()
        out = {s: decoded[s] for s in self._config.splits}
        out[FAILURES] = failures
        out[MANIFEST] = events | "BuildManifest" >> BuildManifest(prep_manifest, self._run_info)
        if "train" in self._config.splits:
            out[TRANSFORM_FN_KEY] = decoded["train"] | "AnalyzeTrain" >> AnalyzeTrain(
                self._config.features, self._tft_temp_dir
            )
        return out


@dataclass(frozen=True)
class PrepResult:
    output: str
    manifest: dict
    metrics: dict  # Beam counters by name, where the runner reports them

    @property
    def balanced(self) -> bool:
        return bool(self.manifest.get("reconciliation", {}).get("balanced"))


def prepare(
    inputs: Sequence[str],
    output: str,
    *,
    splits: Sequence[str] = schema.SPLITS,
    sample_rate: int = SAMPLE_RATE,
    min_duration: float = audio.DEFAULT_MIN_DURATION,
    max_duration: float = audio.DEFAULT_MAX_DURATION,
    max_clip_bytes: int = audio.DEFAULT_MAX_BYTES,
    num_shards: int = 0,
    range_bytes: int | None = None,
    progress_interval: float = 30.0,
    pipeline_args: Sequence[str] = (),
    test_pipeline: beam.Pipeline | None = None,
) -> PrepResult:
    """Run the prep pipeline over ``inputs`` (archive paths or globs) into ``output``; see the module docstring.

    Raises ``InputError`` (and publishes nothing) when an input is unusable, ``OutputError`` when
    ``output`` may not be written (``speechid.outputs``).
    """
    pipeline_args = list(pipeline_args)
    config = PrepConfig(
        splits=tuple(splits),
        sample_rate=sample_rate,
        min_duration=min_duration,
        max_duration=max_duration,
        max_clip_bytes=max_clip_bytes,
        num_shards=num_shards,
        range_bytes=range_bytes,
        progress_interval=progress_interval,
        workers=local_worker_count(pipeline_args) if test_pipeline is None else None,
    )
    check_pipeline_args(pipeline_args, OWN_FLAGS)
    archives = match_archives(inputs)
    outputs.check_output(output, COMMAND, archives)  # before reading anything: a wrong --output fails at once
    check_archives(archives)
    pin_malloc_thresholds()  # the local runner's driver also runs bundles in-process
    given_output, output = output, outputs.resolve(output)
    staging = outputs.stage(given_output, COMMAND, archives)
    try:
        p = make_pipeline(pipeline_args, test_pipeline)
        _build(p, archives, staging, config, _run_info(config, archives, output))
        # multi_processing: one TensorFlow thread per worker (one worker per core), flat worker heaps.
        local_workers = test_pipeline is None and local_worker_processes(pipeline_args)
        result = run_job(p, COMMAND, {**SINGLE_THREADED_TF, **_MALLOC_ENV}, local_workers)
        # The pipeline wrote the manifest; a run whose inputs were unusable publishes nothing.
        manifest = read_manifest(staging)
        problem = publish_problem(manifest)
        if problem:
            raise InputError(problem)
        outputs.remove_tree(FileSystems.join(staging, _TFT_TEMP_DIR))
        outputs.remove_tree(FileSystems.join(staging, SEEK_INDEX_DIR))
        outputs.publish(staging, given_output, COMMAND)
    except BaseException as e:
        outputs.fail(staging, e)
        raise
    metrics = log_metrics(PREP, result)
    recon = manifest["reconciliation"]
    if recon["balanced"]:
        _LOG.info("prep wrote %s: %s; %s", output, recon["rows"], recon["clips"])
    else:  # a bug, not bad input: say it loudly, the manifest keeps the numbers
        _LOG.error("prep counts do not reconcile: %s; %s", recon["rows"], recon["clips"])
    return PrepResult(output=output, manifest=manifest, metrics=metrics)


def _run_info(config: PrepConfig, archives: list[str], output: str) -> dict:
    """What the manifest records of the run besides its counts."""
    return {
        "speechid_version": speechid.__version__,
        "created_unix": round(time.time(), 3),
        "inputs": archives,
        "output": output,
        "splits": list(config.splits),
        "sample_rate": config.sample_rate,
        "limits": {
            "min_duration": config.min_duration,
            "max_duration": config.max_duration,
            "max_clip_bytes": config.max_clip_bytes,
        },
        "features": config.features.to_dict(),
        "analysis": "train" if "train" in config.splits else None,
    }


def _build(p: beam.Pipeline, archives: list[str], staging: str, config: PrepConfig, run_info: dict) -> None:
    """The job on ``p``: read the archives, apply ``PrepCorpus``, write everything into ``staging``."""
    index_dir = FileSystems.join(staging, SEEK_INDEX_DIR)  # pass 1 -> pass 2 (readable by every worker)
    out = (
        p
        | "ListArchives" >> beam.Create(archives)
        | "ReadArchives" >> ReadArchives(index_dir, config.splits, config.range_bytes, config.progress_interval,
                                         namespace=PREP)
        | "PrepCorpus" >> PrepCorpus(config, run_info, FileSystems.join(staging, _TFT_TEMP_DIR))
    )
    for split in config.splits:
        _ = out[split] | f"Write{split.title()}" >> WriteGzipTFRecords(
            schema.record_prefix(staging, split), schema.RECORD_SUFFIX, config.num_shards
        )
    _ = out[FAILURES] | "WriteFailures" >> WriteFailures(staging)
    _ = out[MANIFEST] | "WriteManifest" >> WriteManifest(staging)
    if TRANSFORM_FN_KEY in out:
        import tensorflow_transform.beam as tft_beam

        _ = out[TRANSFORM_FN_KEY] | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)


def _split_names(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def flag_parser() -> JobFlags:
    """prep's own flags, defined once (``speechid prep`` forwards its arguments to ``run``)."""
    p = JobFlags("speechid prep", "Prepare Common Voice archives for training: TFRecords per split, "
                                  "tf.Transform statistics, failures/ and manifest.json.")
    p.add_argument("--input", dest="inputs", metavar="INPUT", action="append", required=True,
                   help="a .tar/.tar.gz release, local or gs://; globs allowed; repeatable")
    p.add_argument("--output", required=True,
                   help="output folder (local or gs://): new, empty, or an earlier prep output, replaced atomically")
    p.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="Hz of the records (>= 8000)")
    p.add_argument("--splits", default=",".join(schema.SPLITS), type=_split_names,
                   help=f"TSVs whose rows become records (from {','.join(schema.ALL_SPLITS)})")
    p.add_argument("--min-duration", type=float, default=audio.DEFAULT_MIN_DURATION, help="seconds; shorter clips fail")
    p.add_argument("--max-duration", type=float, default=audio.DEFAULT_MAX_DURATION, help="seconds; longer clips fail")
    p.add_argument("--max-clip-bytes", type=int, default=audio.DEFAULT_MAX_BYTES,
                   help="a larger clip member is not read (fails as too_large)")
    p.add_argument("--num-shards", type=int, default=0,
                   help="shards per split; 0 lets the runner decide (no extra shuffle of the records)")
    p.add_argument("--progress-interval", type=float, default=30.0, help="seconds between a worker's progress lines")
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Our flags first; everything else is returned for PipelineOptions (Beam's split-argv idiom)."""
    return flag_parser().parse_known_args(argv)


OWN_FLAGS = flag_parser().own_flags()


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> PrepResult:
    """Command-line entry: parse our flags (their names are ``prepare``'s keywords), pass the rest to Beam."""
    args, pipeline_args = parse_args(argv)
    return prepare(**vars(args), pipeline_args=pipeline_args, test_pipeline=test_pipeline)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run()
