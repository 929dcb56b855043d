"""EmbedClips and EmbedCorpus on in-memory clips with a fake model handler (as Beam's own RunInference tests do)."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from speechid import audio
from speechid.pipelines import embed
from speechid.pipelines.embed_inputs import ClipSource, ReadAudioFiles, detect_kind, expand_input, resolve_inputs
from speechid.pipelines.embed_stages import EmbedClips, EmbedConfig, MeanUnitVector
from speechid.pipelines.failures import FAILURES
from tests.conftest import tone

RATE = 16_000
DIM = 4


def fake_embedding(window: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for the network: simple statistics of the window."""
    w = np.asarray(window, np.float64)
    v = np.array([w.mean() + 1.0, w.std() + 0.1, np.abs(w).max() + 0.2, len(w) / RATE])
    return (v / np.linalg.norm(v)).astype(np.float32)


class FakeModel:
    def predict(self, batch):
        return [fake_embedding(w) for w in batch]


class FakeHandler(ModelHandler):
    def load_model(self):
        return FakeModel()

    def run_inference(self, batch, model, inference_args=None):
        return [PredictionResult(x, y) for x, y in zip(batch, model.predict(batch), strict=True)]


CONFIG = EmbedConfig(sample_rate=RATE, window_s=1.0, hop_s=0.5, min_duration=0.3)


def expected_vector(wave):
    from speechid.model.windows import pool_embeddings, window_waveform

    windows = window_waveform(wave, RATE, CONFIG.window_s, CONFIG.hop_s)
    return pool_embeddings(np.stack([fake_embedding(w) for w in windows])), len(windows)


def _rows_close(expected):
    def check(actual):
        assert len(actual) == len(expected), actual
        by_id = {r["clip_id"]: r for r in actual}
        for clip_id, (vec, n_windows, speaker) in expected.items():
            row = by_id[clip_id]
            assert row["n_windows"] == n_windows
            assert row["speaker_id"] == speaker
            assert row["model_id"] == "fake-model"
            np.testing.assert_allclose(row["embedding"], vec, atol=1e-5)
            assert abs(np.linalg.norm(row["embedding"]) - 1) < 1e-5

    return check


def test_embed_clips_pools_windows_and_routes_failures():
    long_wave = tone(2.3, RATE, 180)
    short_wave = tone(0.6, RATE, 300)
    a_bytes, c_bytes = audio.encode(long_wave, RATE, "WAV"), audio.encode(short_wave, RATE, "FLAC")
    clips = [
        ClipSource("a.wav", "files", "spk1", data=a_bytes),
        ClipSource("b", "recs", "spk2", "test", audio=tone(1.2, 48_000, 250), sample_rate=48_000),
        ClipSource("c.flac", "files", None, data=c_bytes),
        ClipSource("bad.mp3", "files", None, data=b"not audio at all" * 10),
        ClipSource("empty.wav", "files", None, data=b""),
        ClipSource("tiny", "recs", "spk3", audio=tone(0.1, RATE), sample_rate=RATE),
    ]
    expected = {
        "a.wav": (*expected_vector(audio.decode(a_bytes)), "spk1"),
        "b": (*expected_vector(audio.resample(tone(1.2, 48_000, 250), 48_000, RATE)), "spk2"),
        "c.flac": (*expected_vector(audio.decode(c_bytes)), None),
    }
    handler = KeyedModelHandler(FakeHandler())
    with BeamTestPipeline() as p:
        out = p | beam.Create(clips) | EmbedClips(CONFIG, handler, "fake-model")
        assert_that(out["rows"], _rows_close(expected), label="Rows")
        reasons = out[FAILURES] | beam.Map(lambda f: (f.path, f.reason))
        assert_that(
            reasons, equal_to([("bad.mp3", "corrupt"), ("empty.wav", "empty"), ("tiny", "too_short")]), label="Fails"
        )


def test_mean_unit_vector_combines_partial_sums():
    fn = MeanUnitVector()
    vecs = [np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 2.0])]
    a = fn.add_input(fn.add_input(fn.create_accumulator(), vecs[0]), vecs[1])
    b = fn.add_input(fn.create_accumulator(), vecs[2])
    out = fn.extract_output(fn.merge_accumulators([a, b, fn.create_accumulator()]))
    np.testing.assert_allclose(out, np.array([1, 1, 2]) / np.sqrt(6), atol=1e-6)


@pytest.mark.parametrize(
    "pattern,kind",
    [
        ("gs://b/cv/*.tar.gz", "archive"),
        ("/data/cv-corpus-7.0-en.tar", "archive"),
        ("/data/x/train-*.tfrecord.gz", "tfrecord"),
        ("/audio/**/*.wav", "audio"),
    ],
)
def test_detect_kind(pattern, kind):
    assert detect_kind(pattern) == kind


def test_prep_output_dir_is_tfrecords(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    assert detect_kind(str(tmp_path)) == "tfrecord"
    assert expand_input(str(tmp_path), "tfrecord").endswith("*.tfrecord.gz")


def test_accelerator_hint_only_on_the_inference_step():
    from apache_beam.ml.inference.base import RunInference

    p = beam.Pipeline()
    _ = p | beam.Create([]) | EmbedClips(CONFIG, KeyedModelHandler(FakeHandler()), "m", "type:nvidia-l4;count:1")
    hinted = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            hints = node.transform.get_resource_hints() if node.transform else {}
            if hints:
                hinted[type(node.transform)] = hints

        enter_composite_transform = visit_transform

    p.visit(Visitor())
    assert list(hinted) == [RunInference]
    assert b"nvidia-l4" in next(iter(hinted[RunInference].values()))


def test_decoded_audio_obeys_the_same_duration_limits_as_encoded():
    limits = EmbedConfig(sample_rate=RATE, window_s=1.0, hop_s=0.5, min_duration=0.3, max_duration=2.0)
    clips = [
        ClipSource("long-rec", "recs", "s", audio=tone(2.5, RATE), sample_rate=RATE),
        ClipSource("long.wav", "files", None, data=audio.encode(tone(2.5, RATE), RATE, "WAV")),
    ]
    with BeamTestPipeline() as p:
        out = p | beam.Create(clips) | EmbedClips(limits, KeyedModelHandler(FakeHandler()), "m")
        reasons = out[FAILURES] | beam.Map(lambda f: (f.path, f.reason))
        assert_that(reasons, equal_to([("long-rec", "too_long"), ("long.wav", "too_long")]))


def test_one_duration_rule_for_embed_and_compare():
    from speechid.model.encoder import ENCODER_LIMITS

    # The rule has one home; the Encoder (compare, query) and every embed entry point apply it.
    assert ENCODER_LIMITS == audio.INFERENCE_LIMITS
    defaults = EmbedConfig(sample_rate=RATE, window_s=1.0, hop_s=0.5)
    args, _ = embed.parse_args(["--model", "m", "--input", "i", "--output", "o"])
    assert (defaults.min_duration, defaults.max_duration) == (args.min_duration, args.max_duration) == (
        audio.INFERENCE_LIMITS.min_duration, audio.INFERENCE_LIMITS.max_duration)
    clips = [
        ClipSource("short.wav", "files", None, data=audio.encode(tone(0.2, RATE), RATE, "WAV")),
        ClipSource("short-rec", "recs", "s", audio=tone(0.2, RATE), sample_rate=RATE),
        ClipSource("ok.wav", "files", None, data=audio.encode(tone(0.6, RATE), RATE, "WAV")),
    ]
    with BeamTestPipeline() as p:
        out = p | beam.Create(clips) | EmbedClips(defaults, KeyedModelHandler(FakeHandler()), "m")
        reasons = out[FAILURES] | beam.Map(lambda f: (f.path, f.reason))
        assert_that(reasons, equal_to([("short.wav", "too_short"), ("short-rec", "too_short")]), label="Failed")
        assert_that(out["rows"] | beam.Map(lambda r: r["clip_id"]), equal_to(["ok.wav"]), label="Written")


def test_only_speech_is_embedded_and_a_clip_without_any_fails_no_speech():
    quiet = np.zeros(RATE, np.float32)
    padded = np.concatenate([quiet, tone(1.5, RATE, 180), quiet])  # 1 s of silence either side
    trimmed = audio.trim_silence(padded, RATE, audio.INFERENCE_LIMITS, "padded")
    assert 1.5 <= len(trimmed) / RATE < 2.0  # the tone and the padding around it, not the silence
    rng = np.random.default_rng(0)
    clips = [
        ClipSource("padded-rec", "recs", "s", audio=padded, sample_rate=RATE),
        ClipSource("silent-rec", "recs", "s", audio=np.zeros(2 * RATE, np.float32), sample_rate=RATE),
        ClipSource("noise.wav", "files", None,
                         data=audio.encode(0.1 * rng.standard_normal(2 * RATE).astype(np.float32), RATE, "WAV")),
    ]
    vec, n_windows = expected_vector(trimmed)
    with BeamTestPipeline() as p:
        out = p | beam.Create(clips) | EmbedClips(CONFIG, KeyedModelHandler(FakeHandler()), "fake-model")
        reasons = out[FAILURES] | beam.Map(lambda f: (f.path, f.reason))
        assert_that(reasons, equal_to([("silent-rec", "no_speech"), ("noise.wav", "no_speech")]), label="Failed")
        assert_that(out["rows"], _rows_close({"padded-rec": (vec, n_windows, "s")}), label="Rows")
        durations = out["rows"] | beam.Map(lambda r: round(r["duration_s"], 4))
        assert_that(durations, equal_to([round(len(trimmed) / RATE, 4)]), label="Duration")


def test_inputs_that_exist_are_taken_literally_though_their_names_hold_glob_characters(tmp_path):
    from apache_beam.io.filesystems import FileSystems

    from speechid.errors import InputError
    from tests.pipelines.prep_helpers import local_pipeline, small_release

    clip = tmp_path / "clip [1].wav"
    clip.write_bytes(audio.encode(tone(1.0), RATE, "WAV"))
    (tmp_path / "clip 1.wav").write_bytes(audio.encode(tone(1.0), RATE, "WAV"))  # "clip [1].wav" as a glob
    archive = small_release(tmp_path / "cv [en].tar.gz")
    small_release(tmp_path / "cv e.tar.gz")
    (pattern, kind, stands_for), (_, akind, archives) = resolve_inputs([str(clip), archive])
    assert (kind, stands_for, akind, archives) == ("audio", [str(clip)], "archive", [archive])
    assert [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list] == [str(clip)]
    with local_pipeline() as p:
        read = p | ReadAudioFiles(pattern)
        assert_that(read["clips"] | beam.Map(lambda c: c.clip_id), equal_to([str(clip)]))
    (tmp_path / "clip x1].wav").write_bytes(b"")  # the one name its glob form would also take
    with pytest.raises(InputError, match=r"clip \[1\]\.wav: its name holds glob characters.*clip x1\]\.wav"):
        resolve_inputs([str(clip)])


def test_embed_corpus_embeds_routes_failures_and_counts_the_manifest():
    from speechid.pipelines.archives import CLIPS
    from speechid.pipelines.failures import Failure, input_failed_event
    from speechid.pipelines.manifest import EVENTS, MANIFEST, publish_problem

    archive = "/data/cv.tar.gz"
    clips = [
        ClipSource("a.wav", "files", "spk1", data=audio.encode(tone(1.5, RATE, 180), RATE, "WAV")),
        ClipSource("b", "recs", "spk2", "test", audio=tone(1.2, RATE, 250), sample_rate=RATE),
        ClipSource("bad.mp3", "files", None, data=b"not audio at all" * 10),
    ]
    refused = [Failure(archive, "evil.wav", "unsafe_path", "member ../evil.wav: '..' component", clips=1)]
    events = [
        ("clips_unlisted", archive, 1),
        ("members_ignored", archive, 2),
        ("clips_seen", archive, 4),  # the archive reader's own count: embed's manifest counts what it was given
        input_failed_event(Failure("/data/cut.tar.gz", "", "archive_truncated", "stream ends early")),
    ]
    run_info = {"model_id": "fake-model", "inputs": [{"pattern": "/data/*", "kind": "audio"}]}

    def check(manifests):
        (m,) = manifests
        assert (m["clips_seen"], m["clips_written"], m["clips_failed"], m["clips_skipped"]) == (5, 2, 2, 1)
        assert m["failures_by_reason"] == {"corrupt": 1, "unsafe_path": 1}
        assert m["skipped_by_reason"] == {"unlisted": 1} and m["other_members_ignored"] == 2
        assert m["inputs_failed"] == [{"archive": "/data/cut.tar.gz", "member": "", "reason": "archive_truncated",
                                       "detail": "stream ends early"}]
        assert m["reconciles"] and m["reconciliation"] == "5 seen = 2 written + 2 failed + 1 skipped by policy"
        assert m["model_id"] == "fake-model" and publish_problem(m) is None

    with BeamTestPipeline() as p:
        read = {CLIPS: p | "Clips" >> beam.Create(clips), FAILURES: p | "Refused" >> beam.Create(refused),
                EVENTS: p | "Events" >> beam.Create(events)}
        out = read | embed.EmbedCorpus(CONFIG, KeyedModelHandler(FakeHandler()), run_info)
        assert_that(out["rows"] | beam.Map(lambda r: r["clip_id"]), equal_to(["a.wav", "b"]), label="Rows")
        assert_that(out[FAILURES] | beam.Map(lambda f: (f.path, f.reason)),
                    equal_to([("bad.mp3", "corrupt"), ("evil.wav", "unsafe_path")]), label="Failures")
        assert_that(out[MANIFEST], check, label="Manifest")


def test_one_publish_rule_for_both_jobs_manifests():
    from speechid.pipelines.manifest import publish_problem

    embed_m = {"inputs": [{"pattern": "a/*.wav", "kind": "audio"}, {"pattern": "b/*.wav", "kind": "audio"}],
               "inputs_failed": [], "clips_seen": 2, "clips_written": 0, "failures_by_reason": {"too_short": 2},
               "skipped_by_reason": {}}
    assert publish_problem(embed_m) == ("--input a/*.wav (and 1 more): none of its 2 clips was embedded "
                                        "(too_short 2); nothing was written")
    assert publish_problem({**embed_m, "clips_seen": 0, "failures_by_reason": {}}) == (
        "--input a/*.wav (and 1 more): no clips in it; nothing was written")
    prep_m = {"inputs": ["x.tar"], "splits": ["train"], "records": {"train": 0}, "rows_read_per_tsv": {},
              "inputs_failed": [{"archive": "x.tar", "member": "", "reason": "archive_unreadable", "detail": "bad"}]}
    assert publish_problem(prep_m) == "x.tar: archive_unreadable (bad); every archive failed, nothing was written"
    assert publish_problem({**prep_m, "inputs_failed": []}) == (
        "--splits train: no records (no train.tsv rows in x.tar); nothing was written")
