"""Drascula: The Vampire Strikes Back (Debian packages ``drascula``, English, ``drascula-spanish`` and
``drascula-italian``).

Each voiced line is a ``.ALS`` file: raw unsigned 8-bit PCM at 11,025 Hz behind a 32-byte header, with 32
trailing bytes that are not audio (ScummVM ``engines/drascula/sound.cpp``). The samples are kept
losslessly, as 16-bit FLAC. The character is the file name's prefix (``engines/drascula/talk.cpp``):

    (none) John Hacker       VB  Von Braun       I  Igor        BJ  B.J.        L  the werewolf
    E      the musician      T   the bartender   B  the drunk   P   the pianist
    D      by number: 1-56 Drascula, 57-64 John Hacker (talk_hacker), 68-76 the blind man
           (talk_blind, from TEXTD_START = 68), 82 the bartender (his special line); others unlabelled
    S      sound effects, not speech; any other prefix: unlabelled

The Spanish and Italian packages are other casts, so labels keep the language (``drascula-it/igor``).
No Italian file matches the English audio, but 24 match Spanish ones byte for byte and a few files of
each are links to the English ones: a file whose bytes were already taken (languages in the order en, es,
it) is one clip, and the copy fails as ``duplicate``. The German and French packages hold no voices.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import numpy as np

from speechid.audio import encode
from speechid.corpora.sources import IdenticalFiles, SourceClip, SourceFailure
from speechid.errors import ConfigError

DEFAULT_ROOT = "/usr/share/scummvm/drascula"
PACKAGES = {"en": "drascula", "es": "drascula-spanish", "it": "drascula-italian"}
RELEASE = "drascula"
RATE = 11_025
HEADER = TRAILER = 32
CAVEAT = "Speakers are game characters, not actors: one actor may voice several characters."

_PREFIX = {
    "": "john",
    "VB": "von_braun",
    "I": "igor",
    "BJ": "bj",
    "L": "werewolf",
    "E": "musician",
    "T": "bartender",
    "B": "drunk",
    "P": "pianist",
}
_D_RANGES = ((1, 56, "drascula"), (57, 64, "john"), (68, 76, "blind_man"), (82, 82, "bartender"))
_NAME = re.compile(r"^([A-Z]*)(\d+)\.ALS$", re.IGNORECASE)


def speaker_of(file_name: str) -> tuple[str | None, str, str]:
    """(character or None, failure reason when None, detail) for an ``.ALS`` file name."""
    m = _NAME.match(file_name)
    if not m:
        return None, "unlabelled", "not a <prefix><number>.ALS voice file name"
    prefix, number = m.group(1).upper(), int(m.group(2))
    if prefix == "S":
        return None, "not_speech", "S files are sound effects"
    if prefix == "D":
        for lo, hi, who in _D_RANGES:
            if lo <= number <= hi:
                return who, "", ""
        return None, "unlabelled", f"D{number}: no talk function of the engine names its speaker"
    if prefix in _PREFIX:
        return _PREFIX[prefix], "", ""
    return None, "unlabelled", f"prefix {prefix!r} names no known character"


def als_to_flac(raw: bytes, origin: str) -> bytes:
    """An ``.ALS`` file's bytes -> 16-bit FLAC at 11,025 Hz (raises OSError when no sample is left)."""
    body = raw[HEADER : len(raw) - TRAILER]
    if not body:
        raise OSError(f"{origin}: {len(raw)} bytes hold no samples after the 32-byte header and trailer")
    samples = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    return encode(samples, RATE, fmt="FLAC", subtype="PCM_16")


def resolve_languages(root: str | None, languages: list[str] | None) -> dict[str, str]:
    """language -> folder of its ``.ALS`` files. Asked-for languages must exist; by default, every
    installed one, and at least one."""
    root = root or DEFAULT_ROOT
    wanted = languages or sorted(PACKAGES)
    unknown = [lang for lang in wanted if lang not in PACKAGES]
    if unknown:
        raise ConfigError(
            f"--languages {','.join(unknown)}: Drascula has voices in {', '.join(sorted(PACKAGES))} only "
            "(the German and French packages hold no voices)"
        )
    found = {}
    for lang in sorted(wanted):  # en, es, it: the first language to hold a recording keeps it
        folder = os.path.join(root, lang)
        has_voice = os.path.isdir(folder) and any(n.upper().endswith(".ALS") for n in os.listdir(folder))
        if has_voice:
            found[lang] = folder
        elif languages:
            package = PACKAGES.get(lang, "drascula")
            raise ConfigError(
                f"{folder}: no .ALS voice files; install the Debian package {package} "
                f"(apt-get install {package}) or pass --source with the folder that holds {lang}/"
            )
    if not found:
        names = " ".join(PACKAGES[lang] for lang in sorted(PACKAGES))
        raise ConfigError(
            f"{root}: no Drascula voice files in {', '.join(wanted)}/; install the Debian packages {names} "
            f"(apt-get install {names}) or pass --source with the folder that holds en/, es/ and it/"
        )
    return found


def clips(root: str | None = None, languages: list[str] | None = None) -> Iterator[SourceClip | SourceFailure]:
    """Every ``.ALS`` file of the chosen languages as a labelled clip or a failure with its reason."""
    identical = IdenticalFiles()
    for lang, folder in resolve_languages(root, languages).items():
        for file_name in sorted(os.listdir(folder)):
            if not file_name.upper().endswith(".ALS"):
                continue
            path = os.path.join(folder, file_name)
            origin = f"{lang}/{file_name}"
            who, reason, detail = speaker_of(file_name)
            if who is None:
                yield SourceFailure(origin, reason, detail)
                continue
            copy = identical.copy_of(path, origin)
            if copy:
                yield copy
                continue

            def read(path=path, origin=origin) -> bytes:
                with open(path, "rb") as f:
                    return als_to_flac(f.read(), origin)

            stem = file_name.rsplit(".", 1)[0].lower()
            yield SourceClip(
                speaker=f"{RELEASE}-{lang}/{who}",
                name=f"{RELEASE}_{lang}_{stem}.flac",
                origin=origin,
                locale=lang,
                read=read,
                source=folder,
            )
