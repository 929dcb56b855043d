"""Small factories for the prep tests: tarballs built in a few lines, a local pipeline, a network guard."""

from __future__ import annotations

import contextlib
import io
import socket
import tarfile

import numpy as np

from speechid import audio
from tests.conftest import tone

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment"


def wav(seconds: float = 1.0, rate: int = 48_000, channels: int = 1, freq: float = 220.0) -> bytes:
    x = tone(seconds, rate, freq)
    if channels == 2:
        x = np.stack([x, 0.5 * x], axis=1)
    return audio.encode(x, rate, "WAV")


def tsv(*rows: str, header: str = CV_HEADER) -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode("utf-8")


def cv_row(client: str, path: str, sentence: str = "a sentence", up: str = "2", locale: str = "en") -> str:
    return "\t".join((client, path, sentence, up, "0", "", "", "", locale, ""))


def make_tar(path, members: list[tuple], mode: str = "w:gz") -> str:
    """Write ``members`` as (name, bytes) files or (name, 'symlink', target) links, in the given order."""
    with tarfile.open(path, mode) as tar:
        for m in members:
            info = tarfile.TarInfo(m[0])
            if len(m) == 3 and m[1] == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = m[2]
                tar.addfile(info)
            else:
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return str(path)


def local_pipeline():
    """A TestPipeline on Beam's local Python runner (never Prism, which downloads a binary)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner=FnApiRunner(), options=PipelineOptions([]))


@contextlib.contextmanager
def no_network():
    """Fail any Python-level connection or name lookup that is not loopback (Prism's download would be)."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    attempts: list = []

    def is_loopback(host) -> bool:
        return str(host) in ("localhost", "::1", "") or str(host).startswith("127.")

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else ""
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(host):
            attempts.append(address)
            raise OSError(f"network disabled in this test: connect to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host):
            attempts.append(host)
            raise socket.gaierror(f"network disabled in this test: lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo


def small_release(path, speakers_per_split: int = 2, root: str = "cv/en", extra_rows: dict | None = None,
                  extra_members: list | None = None, header: str = CV_HEADER) -> str:
    """A tiny valid release: ``speakers_per_split`` speakers x 2 clips (0.6 s WAV) in each of train, dev and
    test. ``extra_rows`` {split: [raw TSV lines as bytes]} are appended to a TSV; ``extra_members`` are more
    (name, bytes) members at the end."""
    members, n = [], 0
    for split in ("train", "dev", "test"):
        lines = []
        for s in range(speakers_per_split):
            for c in range(2):
                name = f"{split}_{s}_{c}.wav"
                members.append((f"{root}/clips/{name}", wav(0.6, freq=150 + 40 * n)))
                lines.append(cv_row(f"{split}-speaker-{s}", name).encode("utf-8"))
                n += 1
        lines += (extra_rows or {}).get(split, [])
        members.append((f"{root}/{split}.tsv", header.encode("utf-8") + b"\n" + b"\n".join(lines) + b"\n"))
    return make_tar(path, members + list(extra_members or []))

