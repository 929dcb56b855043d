"""Typed errors. Every error a user can cause derives from SpeechIdError and names the offending input;
the CLI turns it into one line on stderr and exit code 2."""


class SpeechIdError(Exception):
    """Base class for errors caused by the input, not by a bug."""


class AudioError(SpeechIdError):
    """A clip that cannot become mono float32 audio at the model rate.

    ``reason`` is one of AUDIO_REASONS; ``source`` names the input (a path, an archive member, ...).
    """

    def __init__(self, reason: str, source: str, detail: str = ""):
        if reason not in AUDIO_REASONS:
            raise ValueError(f"unknown audio failure reason {reason!r}")
        self.reason = reason
        self.source = source
        self.detail = detail
        msg = f"{source}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)

    def __reduce__(self):  # keep the typed fields across pickling (Beam workers, multiprocessing)
        return (type(self), (self.reason, self.source, self.detail))


AUDIO_REASONS = (
    "empty",  # no bytes, or no samples
    "corrupt",  # not decodable as any supported format
    "truncated",  # the header promises more audio than the data holds
    "too_short",  # decodes, but shorter than the minimum duration
    "too_long",  # longer than the maximum duration
    "too_large",  # more bytes than the byte limit
    "unsupported",  # a recognised container that libsndfile cannot decode (MP4/AAC, ...)
    "no_speech",  # decodes, but holds too little speech (silence, hum, steady noise, a short burst)
)


class ConfigError(SpeechIdError):
    """A missing or inconsistent path, flag or directory."""


class InputError(SpeechIdError):
    """An input that cannot be used at all (not an archive, empty, no usable rows or clips): the run
    publishes nothing and a previous output stays as it was."""


class OutputError(ConfigError):
    """An output folder a command must not write or replace (someone else's files, an input inside it)."""
