"""Bulk embedding: clips -> fixed windows -> RunInference -> per-clip unit embeddings in Parquet.

Inputs are Common Voice archives (.tar / .tar.gz), globs of audio files, or the prep pipeline's
TFRecords, local or on any Beam filesystem (gs://...). The kind is detected from the pattern and can be
forced with ``--input-kind``. Each clip is decoded with ``speechid.audio``, cut into fixed windows
(``speechid.model.export.window_waveform``, the same cut the Encoder uses, so batches are dense), run
through ``RunInference(KeyedModelHandler(TFModelHandlerNumpy))`` keyed by clip (the model is loaded once
per worker process and shared across its threads by RunInference), then each clip's windows are averaged
and L2-normalised by a combiner (lifted, so most clips are finished before any shuffle).

Outputs (appear atomically: staged beside the output and published by ``speechid.outputs``, which also
refuses an output folder that is not embed's own or that holds an input):
    <output>/part-SSSSS-of-NNNNN.parquet   speechid.embedding_table schema
    <output>/failures/failures-*.jsonl     one JSON line per clip or archive member that could not be
                                           embedded, with reason
    <output>/manifest.json                 counts: clips seen = written + failed + skipped by policy
                                           (archive clips no TSV row lists), by reason; archives or TSVs
                                           that failed whole

Inputs are checked before the job starts: a pattern that matches nothing, a folder that is not a prep
output, or a file that is not an archive is an ``InputError`` naming it; a run that embeds nothing
publishes nothing.

Run it:
    python -m speechid.pipelines.embed --model models/synth --input 'data/synth/test-*.tfrecord.gz' \\
        --output embeddings/synth --direct_num_workers 2 --direct_running_mode multi_processing
    python -m speechid.pipelines.embed --model gs://B/models/cv --input 'gs://B/cv/*.tar.gz' \\
        --output gs://B/embeddings/cv --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --setup_file ./setup.py \\
        --sdk_container_image REGION-docker.pkg.dev/P/speechid/worker:latest \\
        --inference-accelerator "type:nvidia-l4;count:1;install-nvidia-driver" --machine_type g2-standard-8
    python -m speechid.pipelines.embed --model /shared/models/cv --input /shared/data/cv \
        --output /shared/embeddings/cv --runner DaskRunner --dask_client_address SCHEDULER:8786
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

import speechid  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from speechid import audio as audio_lib
from speechid import outputs, schema
from speechid.errors import AudioError, ConfigError, InputError
from speechid.model.export import read_config, verify_serving_model

FAILED = "failed"
KINDS = ("archive", "audio", "tfrecord")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz")


@dataclass(frozen=True)
class ClipSource:
    """One clip to embed: encoded bytes (archives, files) or decoded audio (TFRecords)."""

    clip_id: str
    source: str
    speaker_id: str | None = None
    split: str | None = None
    data: bytes | None = None
    audio: np.ndarray | None = None
    sample_rate: int = 0


@dataclass(frozen=True)
class EmbedConfig:
    """What the windowing needs; read from the model directory's config.json."""

    sample_rate: int
    window_s: float
    hop_s: float
    min_duration: float | None = audio_lib.INFERENCE_LIMITS.min_duration
    max_duration: float | None = audio_lib.INFERENCE_LIMITS.max_duration
    min_speech: float | None = audio_lib.INFERENCE_LIMITS.min_speech

    def __post_init__(self):
        if self.hop_s <= 0 or self.window_s <= 0:
            raise ConfigError(f"--window {self.window_s} / --hop {self.hop_s}: seconds, both must be positive")
        low, high = self.min_duration or 0.0, self.max_duration
        if low < 0 or (high is not None and not low < high):
            raise ConfigError(f"--min-duration {self.min_duration} / --max-duration {self.max_duration}: "
                              "need 0 <= min < max")


def detect_kind(pattern: str) -> str:
    """'archive', 'tfrecord' or 'audio' from the pattern's suffix (a prep output dir means tfrecord)."""
    p = pattern.rstrip("/")
    if p.endswith(_ARCHIVE_SUFFIXES):
        return "archive"
    if p.endswith(_TFRECORD_SUFFIXES):
        return "tfrecord"
    if FileSystems.exists(os.path.join(p, schema.MANIFEST)):
        return "tfrecord"
    return "audio"


def expand_input(pattern: str, kind: str) -> str:
    """A prep output directory stands for all its split records."""
    if kind == "tfrecord" and not pattern.rstrip("/").endswith(_TFRECORD_SUFFIXES):
        return os.path.join(pattern.rstrip("/"), f"*{schema.RECORD_SUFFIX}")
    return pattern


def resolve_inputs(patterns: list[str], input_kind: str = "auto") -> list[tuple[str, str, list[str]]]:
    """(pattern to read, kind, what it stands for) per input, checked before anything runs.

    "What it stands for" are the paths an output must keep apart from (``speechid.outputs.check_apart``):
    the archives matched, a prep folder, or the glob itself. Errors name the input as given.
    """
    from speechid.pipelines import prep

    if not patterns:
        raise ConfigError("no --input given")
    resolved = []
    for pattern in patterns:
        kind = detect_kind(pattern) if input_kind == "auto" else input_kind
        if kind not in KINDS:
            raise ConfigError(f"--input-kind {kind!r}: choose from auto, {', '.join(KINDS)}")
        if outputs.is_local(pattern) and os.path.isdir(pattern) and kind != "tfrecord":
            raise InputError(
                f"--input {pattern}: a folder; give a glob of the clips in it (e.g. "
                f"'{os.path.join(pattern, '**', '*.wav')}'), archives, or a `speechid prep` output"
            )
        expanded = expand_input(pattern, kind)
        if kind == "archive":
            archives = prep.match_archives([expanded])
            prep.check_archives(archives)
            resolved.append((expanded, kind, archives))
            continue
        literal = prep.literal_path(pattern)
        if literal:  # Beam's readers glob what they are given, with no escape: '?' stands for each glob character
            expanded = expand_input(prep.GLOB_CHARS.sub("?", pattern), kind)
        try:  # one match is enough to know the pattern is not a typo; the job lists the rest itself
            limits = None if literal else [1]
            found = [m.path for r in FileSystems.match([expanded], limits=limits) for m in r.metadata_list]
        except Exception as e:  # Beam raises BeamIOError/ValueError depending on the scheme
            raise InputError(f"--input {pattern}: {e}") from None
        if not found:
            raise InputError(f"--input {pattern}: no {'record' if kind == 'tfrecord' else 'file'} matches")
        stray = [f for f in found if literal and not _within(f, pattern)]
        if stray:
            raise InputError(f"--input {pattern}: its name holds glob characters, and read as a glob it would also "
                             f"take {stray[0]}; rename it")
        folders = [f for f in found if outputs.is_local(f) and os.path.isdir(f)]
        if folders:
            raise InputError(f"--input {pattern}: matches the folder {folders[0]}; give a glob of files (e.g. "
                             f"'{os.path.join(glob_base(pattern), '**', '*.wav')}')")
        resolved.append((expanded, kind, [pattern.rstrip("/") if kind == "tfrecord" or literal else expanded]))
    return resolved


def _within(found: str, path: str) -> bool:
    """True when ``found`` is ``path`` or lies in the folder ``path``."""
    if outputs.is_local(path):
        found, path = os.path.abspath(found), os.path.abspath(path)
    path = path.rstrip("/")
    return found == path or found.startswith(path + "/")


def glob_base(pattern: str) -> str:
    return outputs.glob_root(pattern).rstrip("/") or "."


# --- reading -------------------------------------------------------------------------------------------


SKIPPED, INPUTS_FAILED, IGNORED = "skipped", "inputs_failed", "ignored"


def _nothing_else(pbegin, clips) -> dict:
    """A reader's outputs when only clips can come out of it (audio files, prep records)."""
    out = {"clips": clips}
    for name in (FAILED, SKIPPED, INPUTS_FAILED, IGNORED):
        out[name] = pbegin | f"No{name.title().replace('_', '')}" >> beam.Create([])
    return out


class ReadAudioFiles(beam.PTransform):
    """Glob of audio files -> {'clips': ClipSource(clip_id=path, data=bytes), FAILED: (none)}."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        clips = (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Match" >> beam.io.fileio.MatchAll()
            | "Open" >> beam.io.fileio.ReadMatches()
            | "ToClip"
            >> beam.Map(lambda f: ClipSource(clip_id=f.metadata.path, source=f.metadata.path, data=f.read()))
        )
        return _nothing_else(pbegin, clips)


def _record_to_clip(raw: bytes) -> ClipSource:
    rec = schema.from_example(raw)
    return ClipSource(
        clip_id=rec.clip_id,
        source=rec.source,
        speaker_id=rec.client_id or None,
        split=rec.split or None,
        audio=rec.audio,
        sample_rate=rec.sample_rate,
    )


class ReadRecords(beam.PTransform):
    """The prep pipeline's GZIP TFRecords -> {'clips': ClipSource(audio=decoded PCM), FAILED: (none)}."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        clips = (
            pbegin
            | "ReadTFRecords" >> beam.io.ReadFromTFRecord(self._pattern, compression_type="gzip")
            | "ParseRecords" >> beam.Map(_record_to_clip)
        )
        return _nothing_else(pbegin, clips)


def _pair_to_clip(pair) -> ClipSource:
    row, clip = pair
    return ClipSource(
        clip_id=row.get("path"),
        source=row.archive,
        speaker_id=row.get("client_id") or None,
        split=row.split if row.split in schema.SPLITS else None,
        data=clip.data,
    )


def _archive_failure(f) -> dict:
    detail = f.detail if f.clips else f"member {f.path}: {f.detail}"  # a refused member: say which
    return {"clip_id": f.path.rsplit("/", 1)[-1], "source": f.archive, "reason": f.reason, "detail": detail}


def _member_level(f) -> bool:
    """A failure that stands for a clip or an archive member (not for a TSV row, nor a whole input)."""
    from speechid.pipelines.archives import INPUT_REASONS

    return f.clips > 0 or (f.rows == 0 and f.reason not in INPUT_REASONS)


def _input_failure(f) -> str:
    return json.dumps({"archive": f.archive, "member": f.path, "reason": f.reason, "detail": f.detail})


# Join events that stand for a clip embed does not embed by policy, and the name the manifest gives them.
_SKIP_EVENTS = {"clips_unlisted": "unlisted", "clips_not_selected": "not_selected"}


class ReadArchiveClips(beam.PTransform):
    """Common Voice archives -> {'clips': ClipSource with client_id and split from the TSVs, FAILED}.

    Reuses the prep pipeline's two-pass reader and join (``archives``: an archive is never extracted or held
    whole, every worker reads ranges of it, and no audio byte is shuffled).
    Every TSV is read, so each clip gets its speaker; a clip listed twice (train.tsv and validated.tsv)
    is one clip. Every clip member ends up embedded, failed (a duplicate or refused member, with its
    reason) or skipped by policy (``unlisted``: no TSV row names it, so it has no speaker); other
    members (TSVs, README) are counted as ignored. Row-level problems belong to prep's manifest; an
    archive or TSV that fails whole goes to ``inputs_failed``.
    """

    def __init__(self, pattern: str, index_dir: str):
        super().__init__()
        self._pattern = pattern
        self._index_dir = index_dir

    def expand(self, pbegin):
        from speechid.pipelines import archives, prep

        read = (
            pbegin
            | "ListArchives" >> beam.Create(prep.match_archives([self._pattern]))
            | "ReadArchives" >> archives.ReadArchives(self._index_dir, splits=schema.ALL_SPLITS)
        )
        joined = {archives.ROWS: read[archives.ROWS], archives.CLIPS: read[archives.CLIPS]} | (
            "JoinRowsToClips" >> prep.JoinRowsToClips()
        )
        ranges = {archives.PAIRS: joined[archives.PAIRS], archives.INDEXES: read[archives.INDEXES]} | (
            "ReadClipRanges" >> archives.ReadClipRanges()
        )
        clips = ranges[archives.PAIRS] | "ToClip" >> beam.Map(_pair_to_clip)
        everything = (read[archives.FAILURES], joined[archives.FAILURES], ranges[archives.FAILURES]) | (
            "FlattenFailures" >> beam.Flatten()
        )
        failures = everything | "ClipLevel" >> beam.Filter(_member_level) | "ToDict" >> beam.Map(_archive_failure)
        whole = (
            everything
            | "InputLevel" >> beam.Filter(lambda f: f.reason in archives.INPUT_REASONS)
            | "InputToJson" >> beam.Map(_input_failure)
        )
        skipped = joined[archives.EVENTS] | "Skipped" >> beam.FlatMap(
            lambda e: [_SKIP_EVENTS[e[0]]] * e[2] if e[0] in _SKIP_EVENTS else []
        )
        ignored = read[archives.EVENTS] | "Ignored" >> beam.FlatMap(
            lambda e: ["other_members"] * e[2] if e[0] == "members_ignored" else []
        )
        return {"clips": clips, FAILED: failures, SKIPPED: skipped, INPUTS_FAILED: whole, IGNORED: ignored}


def read_source(pattern: str, kind: str, index_dir: str = "") -> beam.PTransform:
    if kind == "archive":
        return ReadArchiveClips(pattern, index_dir)
    if kind == "tfrecord":
        return ReadRecords(pattern)
    return ReadAudioFiles(pattern)


# --- embedding ------------------------------------------------------------------------------------------


def _failure(clip: ClipSource, reason: str, detail: str) -> dict:
    return {"clip_id": clip.clip_id, "source": clip.source, "reason": reason, "detail": detail}


class DecodeAndWindow(beam.DoFn):
    """ClipSource -> (clip key, window) for every window; undecodable clips to the FAILED output.

    The key is a tuple of primitives (clip_id, source, speaker_id, split, duration_s, n_windows) so it
    has a deterministic coder and carries the clip's metadata through RunInference and the combine.
    """

    def __init__(self, config: EmbedConfig):
        self._config = config
        self._limits = audio_lib.Limits(
            min_duration=config.min_duration, max_duration=config.max_duration, min_speech=config.min_speech
        )
        self._decoded = beam.metrics.Metrics.counter("embed", "clips_decoded")
        self._failed = beam.metrics.Metrics.counter("embed", "clips_failed")
        self._windows = beam.metrics.Metrics.counter("embed", "windows")
        self._progress = None

    def setup(self):
        from speechid.pipelines.metrics import Progress

        self._progress = Progress("speechid embed (decode, window)", 30.0)

    def process(self, clip: ClipSource):
        from speechid.model.windows import window_waveform

        cfg = self._config
        try:
            if clip.data is not None:
                wave = audio_lib.decode(clip.data, cfg.sample_rate, self._limits, name=clip.clip_id)
            elif clip.audio is not None:
                wave = audio_lib.resample(clip.audio, clip.sample_rate, cfg.sample_rate)
                if len(wave) == 0:
                    raise AudioError("empty", clip.clip_id, "no samples")
                # Already decoded (TFRecords): the same duration rule decode() applies to encoded clips.
                audio_lib.check_duration(len(wave) / cfg.sample_rate, self._limits, clip.clip_id)
            else:
                raise AudioError("empty", clip.clip_id, "no audio")
            # The Encoder's rule too (parity): only the speech is embedded, a clip without enough is refused.
            wave = audio_lib.trim_silence(wave, cfg.sample_rate, self._limits, clip.clip_id)
        except AudioError as e:
            self._failed.inc()
            self._progress.tick("clips_failed")
            yield beam.pvalue.TaggedOutput(FAILED, _failure(clip, e.reason, e.detail))
            return
        windows = window_waveform(wave, cfg.sample_rate, cfg.window_s, cfg.hop_s)
        key = (clip.clip_id, clip.source, clip.speaker_id, clip.split, len(wave) / cfg.sample_rate, len(windows))
        self._decoded.inc()
        self._windows.inc(len(windows))
        self._progress.tick("clips_decoded")
        for w in windows:
            yield key, w


class MeanUnitVector(beam.CombineFn):
    """Sum of window embeddings -> their mean direction, L2-normalised (speechid.model.export.pool_embeddings)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, vec):
        vec = np.asarray(vec, dtype=np.float64)
        return vec.copy() if acc is None else acc + vec

    def merge_accumulators(self, accs):
        accs = [a for a in accs if a is not None]
        return np.sum(accs, axis=0) if accs else None

    def extract_output(self, acc):
        norm = np.linalg.norm(acc)
        return (acc / norm if norm > 0 else acc).astype(np.float32)


def _to_row(item, model_id: str) -> dict:
    (clip_id, source, speaker_id, split, duration_s, n_windows), emb = item
    return {
        "clip_id": clip_id,
        "source": source,
        "speaker_id": speaker_id,
        "split": split,
        "duration_s": float(duration_s),
        "n_windows": int(n_windows),
        "embedding": emb.tolist(),
        "model_id": model_id,
    }


def _prediction_vector(result) -> np.ndarray:
    return np.asarray(result.inference, dtype=np.float32)


class EmbedClips(beam.PTransform):
    """PCollection[ClipSource] -> {'rows': Parquet row dicts, FAILED: failure dicts}.

    ``model_handler`` is a keyed Beam ModelHandler mapping (key, window) -> (key, PredictionResult);
    ``make_model_handler`` builds the production one, tests pass a fake (as Beam's own tests do).
    """

    def __init__(self, config: EmbedConfig, model_handler, model_id: str, accelerator: str | None = None):
        super().__init__()
        self._config = config
        self._handler = model_handler
        self._model_id = model_id
        self._accelerator = accelerator

    def expand(self, clips):
        from apache_beam.ml.inference.base import RunInference

        windows = clips | "DecodeAndWindow" >> beam.ParDo(DecodeAndWindow(self._config)).with_outputs(
            FAILED, main="windows"
        )
        inference = RunInference(self._handler)
        if self._accelerator:
            # Only this step needs the GPU: Dataflow puts it on accelerator workers (resource hints).
            inference = inference.with_resource_hints(accelerator=self._accelerator)
        rows = (
            windows.windows
            | "Embed" >> inference
            | "ToVector" >> beam.MapTuple(lambda key, result: (key, _prediction_vector(result)))
            | "PoolWindows" >> beam.CombinePerKey(MeanUnitVector())
            | "ToRow" >> beam.Map(_to_row, self._model_id)
        )
        return {"rows": rows, FAILED: windows[FAILED]}


def make_model_handler(model_dir: str, min_batch_size: int, max_batch_size: int):
    from apache_beam.ml.inference.base import KeyedModelHandler
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    return KeyedModelHandler(
        TFModelHandlerNumpy(
            model_uri=os.path.join(model_dir, "saved_model"),
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
        )
    )


# --- the job ----------------------------------------------------------------------------------------------


COMMAND = "embed"  # the name its output folders are marked with (speechid.outputs)


def flag_parser():
    """embed's own flags, defined once (``speechid embed`` forwards its arguments to ``run``)."""
    from speechid.pipelines.flags import JobFlags

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
    """Parse our flags (their names are ``embed_corpus``'s keywords), pass every other flag to Beam, run;
    returns the manifest dict."""
    args, beam_args = parse_args(argv)
    return embed_corpus(**vars(args), pipeline_args=beam_args, test_pipeline=test_pipeline)


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
    from apache_beam.io.parquetio import WriteToParquet

    from speechid import embedding_table
    from speechid.pipelines import jobs, runner, workers
    from speechid.pipelines.flags import check_pipeline_args
    from speechid.pipelines.metrics import log_metrics

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
        p = runner.make_pipeline(pipeline_args, test_pipeline)
        index_dir = os.path.join(staging, "_seek_index")  # archives' pass 1 -> pass 2, removed before publishing
        reads = [
            p | f"Read{i}{kind.title()}" >> read_source(pattern, kind, FileSystems.join(index_dir, str(i)))
            for i, (pattern, kind) in enumerate(sources)
        ]

        def gather(name):
            return [r[name] for r in reads] | f"Flatten{name.title().replace('_', '')}" >> beam.Flatten()

        clips = gather("clips")
        out = clips | "EmbedClips" >> EmbedClips(config, handler, model_cfg["model_id"], inference_accelerator)
        rows = out["rows"]
        read_failures = gather(FAILED)
        failures = (out[FAILED], read_failures) | "FlattenFailures" >> beam.Flatten()
        skipped = gather(SKIPPED)
        rows | "WriteParquet" >> WriteToParquet(
            os.path.join(staging, "part"),
            embedding_table.arrow_schema(int(model_cfg["embedding_dim"])),
            file_name_suffix=".parquet",
            num_shards=num_shards,
        )
        failures | "WriteFailures" >> jobs.WriteJsonLines(os.path.join(staging, schema.FAILURES_DIR, "failures"))
        counts = p | "Counts" >> jobs.CountBy(
            {
                # One Map per input, no Flatten over `clips`: on the local runner in multi_processing
                # mode, a Flatten fed by the split TFRecord read (also consumed by EmbedClips) lost a
                # bundle's worth of elements now and then (1,140 seen for 1,201 written in the demo).
                "seen": clips | "SeenKind" >> beam.Map(lambda c: "clips"),
                "seen_refused": read_failures | "SeenRefusedKind" >> beam.Map(lambda f: "clips"),
                "seen_skipped": skipped | "SeenSkippedKind" >> beam.Map(lambda k: "clips"),
                "written": rows | "WrittenKind" >> beam.Map(lambda r: "clips"),
                "failed": failures | "FailedReason" >> beam.Map(lambda f: f["reason"]),
                "skipped": skipped,
                "inputs_failed": gather(INPUTS_FAILED),
                "ignored": gather(IGNORED),
            }
        )
        counts | "WriteCounts" >> jobs.WriteJsonLines(os.path.join(staging, jobs.COUNTS_DIR, "counts"))
        with workers.single_threaded_tf_workers(runner.local_worker_processes(pipeline_args)):
            result, _ = runner.run_and_wait(p)
        log_metrics("embed", result)

        tallies = jobs.read_counts(os.path.join(staging, jobs.COUNTS_DIR))
        outputs.remove_tree(os.path.join(staging, jobs.COUNTS_DIR))  # internal: the manifest carries the counts
        outputs.remove_tree(index_dir)
        manifest = _manifest(tallies, model_dir, model_cfg, sources, config, output)
        problem = publish_problem(manifest, [pattern for pattern, _ in sources])
        if problem:
            raise InputError(problem)
        if not manifest["reconciles"]:  # a bug, not the input: publish nothing that does not add up
            raise RuntimeError(f"embed: counts do not reconcile: {manifest['reconciliation']}")
        outputs.write_json(os.path.join(staging, schema.MANIFEST), manifest)
        outputs.publish(staging, output, COMMAND)
    except BaseException as e:
        outputs.fail(staging, e)
        raise
    logging.getLogger("speechid").info(
        "embed: %d clips seen, %d written, %d failed, %d skipped -> %s",
        manifest["clips_seen"], manifest["clips_written"], manifest["clips_failed"], manifest["clips_skipped"], output,
    )
    return manifest


def _manifest(tallies: dict, model_dir: str, model_cfg: dict, sources: list, config: EmbedConfig, output: str
              ) -> dict:
    def group(name):
        return {key: n for (g, key), n in sorted(tallies.items()) if g == name}

    seen = sum(tallies.get((g, "clips"), 0) for g in ("seen", "seen_refused", "seen_skipped"))
    written = tallies.get(("written", "clips"), 0)
    failed, skipped = group("failed"), group("skipped")
    return {
        "model": model_dir,
        "output": output,
        "model_id": model_cfg["model_id"],
        "inputs": [{"pattern": pattern, "kind": kind} for pattern, kind in sources],
        "window_s": config.window_s,
        "hop_s": config.hop_s,
        "sample_rate": config.sample_rate,
        "limits": {"min_duration": config.min_duration, "max_duration": config.max_duration},
        "clips_seen": seen,
        "clips_written": written,
        "clips_failed": sum(failed.values()),
        "failures_by_reason": failed,
        "clips_skipped": sum(skipped.values()),
        "skipped_by_reason": skipped,
        "other_members_ignored": sum(group("ignored").values()),
        "inputs_failed": [json.loads(k) for k in group("inputs_failed")],
        "reconciliation": f"{seen} seen = {written} written + {sum(failed.values())} failed + "
        f"{sum(skipped.values())} skipped by policy",
        "reconciles": seen == written + sum(failed.values()) + sum(skipped.values()),
    }


def publish_problem(manifest: dict, patterns: list[str]) -> str | None:
    """Why a finished embed run must publish nothing (one line naming the input), or None."""
    whole = manifest["inputs_failed"]
    tsvs = [f for f in whole if f["reason"] == "unusable_tsv"]
    if tsvs:
        f = tsvs[0]
        return f"{f['archive']}: {f['member']}: {f['detail']}; nothing was written"
    if manifest["clips_written"]:
        return None
    source = patterns[0] + (f" (and {len(patterns) - 1} more)" if len(patterns) > 1 else "")
    if whole:
        f = whole[0]
        return f"{f['archive']}: {f['reason']} ({f['detail']}); no clip was embedded, nothing was written"
    if not manifest["clips_seen"]:
        return f"--input {source}: no clips in it; nothing was written"
    why = ", ".join(f"{r} {n}" for r, n in {**manifest["failures_by_reason"], **manifest["skipped_by_reason"]}.items())
    return f"--input {source}: none of its {manifest['clips_seen']} clips was embedded ({why}); nothing was written"


if __name__ == "__main__":
    # Run through the importable module, not __main__: workers unpickle ClipSource by its module path.
    import logging as _logging

    from speechid.pipelines import embed as _embed

    _logging.basicConfig(level=_logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _logging.getLogger("speechid").setLevel(_logging.INFO)
    _embed.run()
