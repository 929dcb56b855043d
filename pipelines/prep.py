"""Prep: Common Voice archives -> sharded GZIP TFRecords per split, tf.Transform analysis, failures, manifest.

    archives --ReadArchives (pass 1: stream each once)--> TSV rows + clip member places + a gzip seek index
             --JoinRowsToClips (CoGroupByKey of small elements)--> (row, member place) pairs | failures | counts
             --ReadClipRanges (pass 2: GroupByKey by archive range; every worker seeks into the archive)-->
               (row, clip bytes), read and decoded on the same worker: no audio byte is shuffled
             --DecodeClips (speechid.audio -> speechid.schema.to_example)--> one output per split
             --AnalyzeTrain--> tf.Transform: per-mel-bin log-mel mean/var + speaker vocabulary (train split)
    written as <output>/<split>-SSSSS-of-NNNNN.tfrecord.gz, transform_fn/, transformed_metadata/,
    failures/failures-*.jsonl and manifest.json, staged beside <output> and renamed into place at the end.

Local run (Beam's local Python runner; ``--direct_running_mode multi_processing --direct_num_workers 2``
for one worker per core)::

    python -m speechid.pipelines.prep --input data/cv-corpus-synth-en.tar.gz --output data/synth

Dataflow::

    python -m speechid.pipelines.prep --input gs://BUCKET/cv/*.tar.gz --output gs://BUCKET/data/cv \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py

A dask.distributed cluster (``speechid.pipelines.dask_runner``; README "Scaling out")::

    python -m speechid.pipelines.prep --input /shared/cv/*.tar.gz --output /shared/data/cv \
        --runner DaskRunner --dask_client_address SCHEDULER:8786

Runner choice (``speechid.pipelines.runner.make_pipeline``): from Beam 2.68 on, ``DirectRunner`` first tries
the Prism runner, which downloads a Go binary from GitHub on first use. Beam's maintainers name
``FnApiRunner`` as the way to keep the classic Python local runner (apache/beam#34612); it honours
``--direct_running_mode`` and ``--direct_num_workers``. So no ``--runner`` or ``--runner DirectRunner``
runs on ``FnApiRunner`` here and a local run never touches the network; ``--runner PrismRunner`` still
picks Prism on purpose.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import speechid
from speechid import audio, outputs, schema
from speechid.config import SAMPLE_RATE
from speechid.errors import ConfigError, InputError
from speechid.pipelines import jobs, runner, workers
from speechid.pipelines.archives import (
    EVENTS,
    FAILURES,
    INDEXES,
    NAMESPACE,
    Failure,
    ReadArchives,
    ReadClipRanges,
    archive_problem,
)
from speechid.pipelines.flags import JobFlags, check_pipeline_args
from speechid.pipelines.manifest import BuildManifest, publish_problem
from speechid.pipelines.metrics import log_metrics
from speechid.pipelines.records import WriteGzipTFRecords
from speechid.pipelines.stages import (  # noqa: F401  (also importable from here)
    ANALYSIS_BATCH,
    PAIRS,
    AnalyzeTrain,
    DecodeClip,
    DecodeClips,
    JoinRowsToClips,
    MatchClip,
    PrepConfig,
    failure_events,
    pin_malloc_thresholds,
)

_LOG = logging.getLogger(__name__)
COMMAND = "prep"  # the name its output folders are marked with (speechid.outputs)
MANIFEST_KEY = "manifest"
TRANSFORM_FN_KEY = "transform_fn"


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
            self._config.max_clip_bytes
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
        out[MANIFEST_KEY] = events | "BuildManifest" >> BuildManifest(self._run_info)
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


GLOB_CHARS = re.compile(r"[*?[]")  # what Beam's FileSystems.match takes as a glob (it has no escape)


def literal_path(pattern: str) -> bool:
    """True when ``pattern`` holds glob characters and yet names an existing file or folder
    (``cv [en] 2024.tar.gz``): it is that path, not a glob that would miss it."""
    if not GLOB_CHARS.search(pattern):
        return False
    try:
        return FileSystems.exists(pattern)
    except Exception:  # a pattern a filesystem refuses to look up is matched as a glob
        return False


def match_archives(patterns: Sequence[str]) -> list[str]:
    """Every file the patterns match (local or gs://), sorted and de-duplicated; ConfigError if one matches
    none or names a folder. An existing path is taken as it is, glob characters in its name or not."""
    if not patterns:
        raise ConfigError("no --input archive given")
    found: set[str] = set()
    for pattern in patterns:
        try:
            files = [pattern] if literal_path(pattern) else [
                m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
            ]
        except Exception as e:  # Beam raises BeamIOError/ValueError depending on the scheme
            raise ConfigError(f"--input {pattern}: {e}") from None
        files = [f for f in files if not f.endswith("/")]
        folders = [f for f in files if outputs.is_local(f) and os.path.isdir(f)]
        if folders:
            raise InputError(f"--input {folders[0]}: a folder, not an archive (give the archives in it, e.g. "
                             f"'{os.path.join(folders[0], '*.tar.gz')}')")
        if not files:
            raise ConfigError(f"--input {pattern}: no archive matches")
        found.update(os.path.abspath(f) if outputs.is_local(f) else f for f in files)
    return sorted(found)


def check_archives(archives: Sequence[str]) -> None:
    """InputError naming the first archive that is not one at all (``archives.archive_problem``).

    Archives are opened in parallel threads (one block read each), so thousands on gs:// take seconds.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(archives)))) as pool:
        problems = list(pool.map(archive_problem, archives))
    for archive, problem in zip(archives, problems, strict=True):
        if problem:
            raise InputError(f"--input {archive}: {problem}")


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
    """Run the prep pipeline over ``inputs`` (archive paths or globs) into ``output``; see the module docstring."""
    config = PrepConfig(
        splits=tuple(splits),
        sample_rate=sample_rate,
        min_duration=min_duration,
        max_duration=max_duration,
        max_clip_bytes=max_clip_bytes,
        num_shards=num_shards,
        range_bytes=range_bytes,
        progress_interval=progress_interval,
        workers=runner.local_worker_count(list(pipeline_args)) if test_pipeline is None else None,
    )
    check_pipeline_args(pipeline_args, OWN_FLAGS)
    archives = match_archives(inputs)
    outputs.check_output(output, COMMAND, archives)  # before reading anything: a wrong --output fails at once
    check_archives(archives)
    pin_malloc_thresholds()  # the local runner's driver also runs bundles in-process
    given_output, output = output, outputs.resolve(output)
    staging = outputs.stage(given_output, COMMAND, archives)
    tft_temp = FileSystems.join(staging, "_tft_tmp")
    index_dir = FileSystems.join(staging, "_seek_index")  # pass 1 -> pass 2 (readable by every worker)
    run_info = {
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
    try:
        p = runner.make_pipeline(list(pipeline_args), test_pipeline)
        out = (
            p
            | "ListArchives" >> beam.Create(archives)
            | "ReadArchives" >> ReadArchives(index_dir, config.splits, config.range_bytes, config.progress_interval)
            | "PrepCorpus" >> PrepCorpus(config, run_info, tft_temp)
        )
        for split in config.splits:
            _ = out[split] | f"Write{split.title()}" >> WriteGzipTFRecords(
                schema.record_prefix(staging, split), schema.RECORD_SUFFIX, config.num_shards
            )
        _ = (
            out[FAILURES]
            | "FailuresToJson" >> beam.Map(Failure.to_json)
            | "WriteFailures"
            >> beam.io.WriteToText(
                FileSystems.join(staging, schema.FAILURES_DIR, "failures"), file_name_suffix=".jsonl"
            )
        )
        _ = (
            out[MANIFEST_KEY]
            | "ManifestToJson" >> beam.Map(lambda m: json.dumps(m, indent=2, sort_keys=True))
            | "WriteManifest" >> beam.io.WriteToText(FileSystems.join(staging, schema.MANIFEST), shard_name_template="")
        )
        if TRANSFORM_FN_KEY in out:
            import tensorflow_transform.beam as tft_beam

            _ = out[TRANSFORM_FN_KEY] | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)

        # multi_processing: one TensorFlow thread per worker (one worker per core), flat worker heaps.
        local_workers = test_pipeline is None and runner.local_worker_processes(list(pipeline_args))
        with workers.single_threaded_tf_workers(local_workers), workers.worker_environment(_MALLOC_ENV, local_workers):
            result, state = runner.run_and_wait(p)
        if state is not None and str(state).upper().rsplit(".", 1)[-1] not in ("DONE", "RUNNING"):
            raise RuntimeError(f"prep pipeline ended in state {state}")
        # The pipeline wrote the manifest; a run whose inputs were unusable publishes nothing.
        manifest = jobs.read_json(FileSystems.join(staging, schema.MANIFEST))
        problem = publish_problem(manifest)
        if problem:
            raise InputError(problem)
        outputs.remove_tree(tft_temp)
        outputs.remove_tree(index_dir)
        outputs.publish(staging, given_output, COMMAND)
    except BaseException as e:
        outputs.fail(staging, e)
        raise
    metrics = log_metrics(NAMESPACE, result)
    recon = manifest["reconciliation"]
    if recon["balanced"]:
        _LOG.info("prep wrote %s: %s; %s", output, recon["rows"], recon["clips"])
    else:  # a bug, not bad input: say it loudly, the manifest keeps the numbers
        _LOG.error("prep counts do not reconcile: %s; %s", recon["rows"], recon["clips"])
    return PrepResult(output=output, manifest=manifest, metrics=metrics)


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
