"""Bulk embedding: clips -> fixed windows -> RunInference -> per-clip unit embeddings in Parquet.

    inputs --ReadInputs (speechid.pipelines.embed_inputs: archives, audio globs or prep TFRecords)-->
             clips | failures | events
           --EmbedClips (speechid.pipelines.embed_stages: decode, window, RunInference, mean unit vector)-->
             Parquet rows | failures
           --BuildManifest (speechid.pipelines.manifest)--> one manifest dict

``run`` is the job, shaped like ``prep``'s: it reads the inputs (``ReadInputs``), applies one composite
(``EmbedCorpus``: every stage between reading and writing) and writes its outputs. Inputs are checked
before the job starts (``embed_inputs.resolve_inputs``); a run that embeds nothing publishes nothing.

Outputs (appear atomically: staged beside the output and published by ``speechid.outputs``, which also
refuses an output folder that is not embed's own or that holds an input):
    <output>/part-SSSSS-of-NNNNN.parquet   speechid.embedding_table schema
    <output>/failures/failures-*.jsonl     one JSON line per clip or archive member that could not be
                                           embedded, with reason
    <output>/manifest.json                 counts: clips seen = written + failed + skipped by policy
                                           (archive clips no TSV row lists), by reason; archives or TSVs
                                           that failed whole

Local run (``DirectRunner``, the default: Beam's local Python runner, see ``speechid.pipelines.runner``)::

    python -m speechid.pipelines.embed --model models/synth --input 'data/synth/test-*.tfrecord.gz' \\
        --output embeddings/synth --runner DirectRunner --direct_num_workers 2 \\
        --direct_running_mode multi_processing

Dataflow (the inference step alone on GPU workers)::

    python -m speechid.pipelines.embed --model gs://B/models/cv --input 'gs://B/cv/*.tar.gz' \\
        --output gs://B/embeddings/cv --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --setup_file ./setup.py \\
        --sdk_container_image REGION-docker.pkg.dev/P/speechid/worker:latest \\
        --inference-accelerator "type:nvidia-l4;count:1;install-nvidia-driver" --machine_type g2-standard-8

A dask.distributed cluster (``speechid.pipelines.dask_runner``; README "Scaling out")::

    python -m speechid.pipelines.embed --model /shared/models/cv --input /shared/data/cv \\
        --output /shared/embeddings/cv --runner DaskRunner --dask_client_address SCHEDULER:8786
"""

from __future__ import annotations

import logging
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet

from speechid import audio as audio_lib
from speechid import embedding_table, outputs
from speechid.errors import ConfigError, InputError
from speechid.model.model_dir import read_config, verify_serving_model
from speechid.pipelines.archives import CLIPS, SEEK_INDEX_DIR
from speechid.pipelines.embed_inputs import KINDS, ReadInputs, resolve_inputs
from speechid.pipelines.embed_stages import TABLE_ROWS, EmbedClips, EmbedConfig, make_model_handler
from speechid.pipelines.failures import FAILURES, Failure, WriteFailures, failure_events
from speechid.pipelines.flags import JobFlags, check_pipeline_args
from speechid.pipelines.manifest import (
    EVENTS,
    MANIFEST,
    BuildManifest,
    WriteManifest,
    embed_manifest,
    publish_problem,
    read_manifest,
)
from speechid.pipelines.metrics import EMBED, log_metrics
from speechid.pipelines.runner import local_worker_processes, make_pipeline, run_job
from speechid.pipelines.workers import SINGLE_THREADED_TF

COMMAND = "embed"  # the name its output folders are marked with (speechid.outputs)


class EmbedCorpus(beam.PTransform):
    """The whole embed between reading and writing. Input: the dict ``ReadInputs`` returns (clips,
    failures, events). Output: ``rows`` (Parquet row dicts), ``failures`` (Failure, one per clip) and
    ``manifest`` (one dict). ``model_handler`` is a keyed Beam ModelHandler (``make_model_handler``; tests
    pass a fake); ``run_info`` is what the manifest records of the run, ``model_id`` among it."""

    def __init__(self, config: EmbedConfig, model_handler, run_info: dict, accelerator: str | None = None):
        super().__init__()
        self._config = config
        self._handler = model_handler
        self._run_info = run_info
        self._accelerator = accelerator

    def expand(self, read):
        embedded = read[CLIPS] | "EmbedClips" >> EmbedClips(
            self._config, self._handler, self._run_info["model_id"], self._accelerator
        )
        failures = (embedded[FAILURES], read[FAILURES]) | "AllFailures" >> beam.Flatten()
        # One Map per collection, then one Flatten; never a Flatten over the clips themselves: on the local
        # runner in multi_processing mode, a Flatten fed by the split TFRecord read (also consumed by
        # EmbedClips) lost a bundle's worth of elements now and then (1,140 seen for 1,201 written).
        events = (
            read[CLIPS] | "ReadEvents" >> beam.Map(lambda c: ("clips_read", "", 1)),
            read[FAILURES] | "RefusedEvents" >> beam.Map(lambda f: ("clips_refused", "", 1)),
            embedded[TABLE_ROWS] | "WrittenEvents" >> beam.Map(lambda r: ("clips_written", "", 1)),
            failures | "FailureEvents" >> beam.FlatMap(failure_events),
            read[EVENTS],
        ) | "AllEvents" >> beam.Flatten()
        return {
            TABLE_ROWS: embedded[TABLE_ROWS],
            FAILURES: failures,
            MANIFEST: events | "BuildManifest" >> BuildManifest(embed_manifest, self._run_info),
        }


def embed_corpus(
    model_dir: str,
    inputs: list[str],
    output: str,
    *,
    input_kind: str = "auto",
    window_s: float | None = None,
    hop_s: float | None = None,
    min_batch_size: int = 8,
    max_batch_size: int = 64,
    min_duration: float | None = audio_lib.INFERENCE_LIMITS.min_duration,
    max_duration: float | None = audio_lib.INFERENCE_LIMITS.max_duration,
    num_shards: int = 0,
    inference_accelerator: str | None = None,
    pipeline_args: list[str] | None = None,
    test_pipeline=None,
) -> dict:
    """Embed every clip of ``inputs`` with the model in ``model_dir`` into Parquet under ``output``.

    Returns the manifest (also written as ``<output>/manifest.json``). Raises ``InputError`` (and
    publishes nothing) when an input is unusable or no clip could be embedded, ``OutputError`` when
    ``output`` may not be written (``speechid.outputs``).
    """
    pipeline_args = list(pipeline_args or [])
    check_pipeline_args(pipeline_args, OWN_FLAGS)
    model_cfg = read_config(model_dir)
    verify_serving_model(model_dir, model_cfg)  # before Beam: a model that contradicts itself is refused here
    config = EmbedConfig(
        sample_rate=int(model_cfg["sample_rate"]),
        window_s=float(window_s or model_cfg["window_s"]),
        hop_s=float(hop_s or model_cfg["hop_s"]),
        min_duration=min_duration,
        max_duration=max_duration,
    )
    if not 1 <= min_batch_size <= max_batch_size:
        raise ConfigError(f"--min-batch-size {min_batch_size} / --max-batch-size {max_batch_size}: "
                          "need 1 <= min <= max")
    resolved = resolve_inputs(list(inputs), input_kind)
    sources = [(pattern, kind) for pattern, kind, _ in resolved]
    apart = [model_dir] + [path for _, _, paths in resolved for path in paths]
    staging = outputs.stage(output, COMMAND, apart)
    try:
        handler = make_model_handler(model_dir, min_batch_size, max_batch_size)
        corpus = EmbedCorpus(config, handler, _run_info(model_dir, model_cfg, sources, config, output),
                             inference_accelerator)
        p = make_pipeline(pipeline_args, test_pipeline)
        _build(p, sources, staging, corpus, int(model_cfg["embedding_dim"]), num_shards)
        result = run_job(p, COMMAND, SINGLE_THREADED_TF, local_worker_processes(pipeline_args))
        log_metrics(EMBED, result)
        manifest = read_manifest(staging)
        problem = publish_problem(manifest)
        if problem:
            raise InputError(problem)
        if not manifest["reconciles"]:  # a bug, not the input: publish nothing that does not add up
            raise RuntimeError(f"embed: counts do not reconcile: {manifest['reconciliation']}")
        outputs.remove_tree(FileSystems.join(staging, SEEK_INDEX_DIR))
        outputs.publish(staging, output, COMMAND)
    except BaseException as e:
        outputs.fail(staging, e)
        raise
    logging.getLogger("speechid").info(
        "embed: %d clips seen, %d written, %d failed, %d skipped -> %s",
        manifest["clips_seen"], manifest["clips_written"], manifest["clips_failed"], manifest["clips_skipped"], output,
    )
    return manifest


def _run_info(model_dir: str, model_cfg: dict, sources: list[tuple[str, str]], config: EmbedConfig,
              output: str) -> dict:
    """What the manifest records of the run besides its counts."""
    return {
        "model": model_dir,
        "output": output,
        "model_id": model_cfg["model_id"],
        "inputs": [{"pattern": pattern, "kind": kind} for pattern, kind in sources],
        "window_s": config.window_s,
        "hop_s": config.hop_s,
        "sample_rate": config.sample_rate,
        "limits": {"min_duration": config.min_duration, "max_duration": config.max_duration},
    }


def _build(p: beam.Pipeline, sources: list[tuple[str, str]], staging: str, corpus: EmbedCorpus,
           embedding_dim: int, num_shards: int) -> None:
    """The job on ``p``: read the inputs, apply ``EmbedCorpus``, write everything into ``staging``."""
    out = (
        p
        | "ReadInputs" >> ReadInputs(sources, FileSystems.join(staging, SEEK_INDEX_DIR))
        | "EmbedCorpus" >> corpus
    )
    _ = out[TABLE_ROWS] | "WriteParquet" >> WriteToParquet(
        os.path.join(staging, "part"),
        embedding_table.arrow_schema(embedding_dim),
        file_name_suffix=".parquet",
        num_shards=num_shards,
    )
    _ = out[FAILURES] | "WriteFailures" >> WriteFailures(staging, Failure.to_clip_json, num_shards=1)
    _ = out[MANIFEST] | "WriteManifest" >> WriteManifest(staging)


def flag_parser() -> JobFlags:
    """embed's own flags, defined once (``speechid embed`` forwards its arguments to ``run``)."""
    limits = audio_lib.INFERENCE_LIMITS
    p = JobFlags("speechid embed", "Embed clips in bulk with Beam RunInference: Parquet of unit embeddings, "
                                   "failures/ and manifest.json.")
    p.add_argument("--model", dest="model_dir", metavar="MODEL", required=True,
                   help="model directory (config.json + saved_model/), local or gs://")
    p.add_argument("--input", dest="inputs", metavar="INPUT", action="append", required=True,
                   help="Common Voice archive glob, audio file glob, or prep TFRecords / prep output folder; "
                        "repeatable")
    p.add_argument("--output", required=True, help="output folder for part-*.parquet, failures/ and manifest.json: "
                                                   "new, empty, or an earlier embed output, replaced atomically")
    p.add_argument("--input-kind", choices=("auto",) + KINDS, default="auto",
                   help="what --input holds; auto: from the pattern")
    p.add_argument("--window", dest="window_s", metavar="SECONDS", type=float, default=None,
                   help="window seconds (default: the model's)")
    p.add_argument("--hop", dest="hop_s", metavar="SECONDS", type=float, default=None,
                   help="hop seconds (default: the model's)")
    p.add_argument("--min-batch-size", type=int, default=8, help="windows per inference batch, at least")
    p.add_argument("--max-batch-size", type=int, default=64, help="windows per inference batch, at most")
    p.add_argument("--min-duration", type=float, default=limits.min_duration,
                   help="seconds; shorter clips fail (the same rule as `speechid compare`)")
    p.add_argument("--max-duration", type=float, default=limits.max_duration, help="seconds; longer clips fail")
    p.add_argument("--num-shards", type=int, default=0, help="Parquet shards; 0 lets the runner decide")
    p.add_argument("--inference-accelerator", default=None,
                   help="resource hint for the inference step only, "
                        "e.g. 'type:nvidia-l4;count:1;install-nvidia-driver'")
    return p


OWN_FLAGS = flag_parser().own_flags()


def parse_args(argv: list[str] | None):
    return flag_parser().parse_known_args(argv)


def run(argv: list[str] | None = None, test_pipeline=None) -> dict:
    """Command-line entry: parse our flags (their names are ``embed_corpus``'s keywords), pass every other
    flag to Beam, run; returns the manifest dict."""
    args, beam_args = parse_args(argv)
    return embed_corpus(**vars(args), pipeline_args=beam_args, test_pipeline=test_pipeline)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("speechid").setLevel(logging.INFO)
    run()
