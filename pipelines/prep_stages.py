"""The prep job's own stages after the archive reader, each a composite that never touches files.

``DecodeClips`` turns (row, clip) pairs from the archive reader (``speechid.pipelines.archives``) into
serialized ``tf.train.Example`` records, one output per split, and failures; ``AnalyzeTrain`` runs the
tf.Transform analysis over the train records. ``PrepConfig`` holds what they need.
``speechid.pipelines.prep.PrepCorpus`` wires them together with the reader's join and pass 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics import Metrics

from speechid import audio, schema
from speechid.config import SAMPLE_RATE
from speechid.errors import AudioError, ConfigError
from speechid.model.features import FeatureConfig
from speechid.pipelines.failures import FAILURES, Failure
from speechid.pipelines.manifest import EVENTS
from speechid.pipelines.metrics import PREP, Progress
from speechid.pipelines.transform import make_preprocessing_fn, raw_feature_spec
from speechid.pipelines.tsv import clip_member_path

ANALYSIS_BATCH = 32  # clips per tf.Transform analysis batch


@dataclass(frozen=True)
class PrepConfig:
    """What a prep run produces. Size knobs have production defaults; tests shrink the inputs instead."""

    splits: tuple[str, ...] = schema.SPLITS
    sample_rate: int = SAMPLE_RATE
    min_duration: float = audio.DEFAULT_MIN_DURATION
    max_duration: float = audio.DEFAULT_MAX_DURATION
    max_clip_bytes: int = audio.DEFAULT_MAX_BYTES
    num_shards: int = 0  # 0: one shard per bundle, no shuffle of the records (see --num-shards)
    range_bytes: int | None = None  # archive bytes per pass-2 range; None: sized per archive (seekable.plan)
    progress_interval: float = 30.0  # seconds between progress lines of a worker
    workers: int | None = None  # local workers sharing the clips (progress lines' time left); None: unknown
    features: FeatureConfig = field(default=None)  # None: FeatureConfig at sample_rate

    def __post_init__(self):
        bad = [s for s in self.splits if s not in schema.ALL_SPLITS]
        if bad or not self.splits:
            raise ConfigError(f"--splits {','.join(self.splits)}: choose from {', '.join(schema.ALL_SPLITS)}")
        if len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"--splits {','.join(self.splits)}: a split is named twice")
        if self.sample_rate < 8000:
            raise ConfigError(f"--sample-rate {self.sample_rate}: at least 8000 Hz")
        if not 0 <= self.min_duration < self.max_duration:
            raise ConfigError(
                f"--min-duration {self.min_duration} / --max-duration {self.max_duration}: need 0 <= min < max"
            )
        if self.range_bytes is not None and self.range_bytes <= 0:
            raise ConfigError(f"range_bytes {self.range_bytes}: must be > 0 (or None to size ranges per archive)")
        if self.max_clip_bytes <= 0 or self.num_shards < 0:
            raise ConfigError("--max-clip-bytes must be > 0 and --num-shards >= 0")
        if self.features is None:
            object.__setattr__(self, "features", FeatureConfig(sample_rate=self.sample_rate))
        elif self.features.sample_rate != self.sample_rate:
            raise ConfigError(f"feature rate {self.features.sample_rate} != --sample-rate {self.sample_rate}")

    @property
    def limits(self) -> audio.Limits:
        return audio.Limits(self.min_duration, self.max_duration, self.max_clip_bytes)


def pin_malloc_thresholds() -> None:
    """Keep a long-running worker's RSS flat under glibc (no-op elsewhere).

    glibc serves big allocations with mmap and returns them on free, but after the first such free it
    raises its mmap threshold (up to 32 MiB), so from then on every decoded clip's buffers (float32 blocks,
    resampled audio, PCM bytes: ~1 MiB per clip) come from the heap, whose freed pieces fragment and stay
    resident: RSS then grows with the number of clips decoded. Setting the thresholds explicitly turns the
    adjustment off (mallopt(3)). Measured on 2,000 clips: worker peak RSS +240 MB without, +40 MB with.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses (no ldconfig call)
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 128 * 1024)  # glibc's initial value, now fixed
    mallopt(m_trim_threshold, 256 * 1024)


class DecodeClip(beam.DoFn):
    """(TsvRow, Clip) -> a serialized tf.train.Example on the output named after the row's split, or a
    failure with the decoder's reason. Events carry what the manifest needs (split, duration, speaker)."""

    def __init__(self, config: PrepConfig):
        self._config = config
        self._decoded = Metrics.counter(PREP, "clips_decoded")
        self._written = Metrics.counter(PREP, "records_written")
        self._failed = Metrics.counter(PREP, "clips_failed")
        self._seconds = Metrics.distribution(PREP, "clip_ms")

    def setup(self):
        pin_malloc_thresholds()
        self._progress = Progress("speechid prep, pass 2 (read ranges, decode)", self._config.progress_interval)
        self._share_known = False

    def process(self, pair, expected=None):
        if not self._share_known and expected is not None and self._config.workers:
            self._progress.set_total(expected / self._config.workers)  # this worker's share, roughly
            self._share_known = True
        row, clip = pair
        path = clip_member_path(row.tsv, row.get("path"))
        try:
            if clip.data is None:
                raise AudioError("too_large", path, f"{clip.size} bytes > limit {self._config.max_clip_bytes}")
            messages: list[str] = []
            wave = audio.decode(
                clip.data, self._config.sample_rate, self._config.limits, name=path, decoder_messages=messages
            )
            # Refused, not trimmed: records keep the clip as released; embedding trims (speechid.audio).
            audio.require_speech(wave, self._config.sample_rate, self._config.limits, path)
        except AudioError as e:
            reason, detail = e.reason, e.detail
        except Exception as e:  # a decoder bug on one clip must not stop a million-clip job
            reason, detail = "corrupt", f"unexpected {type(e).__name__}: {e}"
        else:
            self._decoded.inc()
            if messages:  # the decoder recovered from frame errors: counted, not printed
                yield beam.pvalue.TaggedOutput(EVENTS, ("decoder_warnings", row.split, 1))
            record = schema.ClipRecord(
                clip_id=row.get("path"),
                client_id=row.get("client_id"),
                audio=wave,
                sample_rate=self._config.sample_rate,
                split=row.split,
                source=row.archive,
                path=path,
                locale=row.locale,
                sentence=row.get("sentence"),
                up_votes=int(row.get("up_votes") or 0),
                down_votes=int(row.get("down_votes") or 0),
                age=row.get("age"),
                gender=row.get("gender"),
                accent=row.get("accent") or row.get("accents"),
                segment=row.get("segment"),
            )
            yield beam.pvalue.TaggedOutput(row.split, schema.to_example(record))
            self._written.inc()
            self._seconds.update(int(record.duration * 1000))
            self._progress.tick("written")
            yield beam.pvalue.TaggedOutput(EVENTS, ("written", row.split, (record.duration, record.client_id)))
            return
        self._failed.inc()
        self._progress.tick("failed")
        yield beam.pvalue.TaggedOutput(
            FAILURES, Failure(row.archive, path, reason, detail, row.split, row.tsv, row.line, rows=1, clips=1)
        )


class DecodeClips(beam.PTransform):
    """(TsvRow, Clip) pairs -> {<split>: serialized Examples for each selected split, failures, events}.

    ``expected``: an optional one-element PCollection, how many pairs the job decodes (progress lines)."""

    def __init__(self, config: PrepConfig, expected=None):
        super().__init__()
        self._config = config
        self._expected = expected

    def expand(self, pairs):
        splits = self._config.splits
        side = {} if self._expected is None else {"expected": beam.pvalue.AsSingleton(self._expected)}
        out = pairs | "DecodeClip" >> beam.ParDo(DecodeClip(self._config), **side).with_outputs(
            FAILURES, EVENTS, *splits
        )
        return {**{s: out[s] for s in splits}, FAILURES: out[FAILURES], EVENTS: out[EVENTS]}


class AnalyzeTrain(beam.PTransform):
    """Serialized train Examples -> tf.Transform ``(transform_fn, metadata)`` of
    ``speechid.pipelines.transform.make_preprocessing_fn(features)``.

    The Examples go to tf.Transform through TFXIO as Arrow RecordBatches (only ``audio`` and
    ``client_id`` are decoded), not as instance dicts, which tf.Transform would re-encode one by one.
    """

    def __init__(self, features: FeatureConfig, temp_dir: str):
        super().__init__()
        self._features = features
        self._temp_dir = temp_dir

    def expand(self, examples):
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import schema_utils
        from tfx_bsl.public import tfxio

        source = tfxio.TFExampleBeamRecord(
            physical_format="inmem",
            telemetry_descriptors=["speechid", "prep"],
            schema=schema_utils.schema_from_feature_spec(raw_feature_spec()),
        )
        # A fixed, small batch: Beam's adaptive batching grows batches of whole clips to hundreds, and the
        # analysis graph holds a batch's waveforms and spectrograms at once.
        batches = examples | "ToRecordBatches" >> source.BeamSource(batch_size=ANALYSIS_BATCH)
        with tft_beam.Context(temp_dir=self._temp_dir):
            return (batches, source.TensorAdapterConfig()) | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(
                make_preprocessing_fn(self._features)
            )

