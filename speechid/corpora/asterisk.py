"""Asterisk's telephone prompts (Debian packages ``asterisk-core-sounds-{en,es,fr,it,ru}-wav`` and
``asterisk-prompt-it-menardi-wav``): ~3,300 professionally read prompts, 8 kHz WAV, five voices.

The packages install one folder per voice under ``/usr/share/asterisk/sounds``, named
``<lang>_<COUNTRY>_<f|m>_<Name>`` (``en_US_f_Allison``); ``en``, ``en_US`` and the like are symbolic links
to a voice folder (``update-alternatives``) and are not read again. The name is the person:
``en_US_f_Allison`` and ``es_MX_f_Allison`` are one woman, so one speaker (``asterisk/allison``) with clips
in two languages. Sub-folders (``digits/``, ``letters/``) are the same voice.

Left out as ``not_speech``: ``silence/*`` (digital silence of 1-10 s), ``beep``, ``beeperr``, the
``*-2tone`` tones and ``tt-monkeys`` (recorded monkeys). A file shared byte for byte between two voice
folders is one clip (``duplicate`` for the second). The WAV bytes are kept as they are.

The layout is the packages' own, as Debian installs them (their file lists, ``dpkg -L``); there is no format
beyond WAV files in folders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from speechid.corpora.folder import clip_name
from speechid.corpora.sources import IdenticalFiles, SourceClip, SourceFailure
from speechid.errors import ConfigError

DEFAULT_ROOT = "/usr/share/asterisk/sounds"
RELEASE = "asterisk"
PACKAGES = tuple(f"asterisk-core-sounds-{lang}-wav" for lang in ("en", "es", "fr", "it", "ru")) + (
    "asterisk-prompt-it-menardi-wav",
)
CAVEAT = "Five professional prompt voices, read in a studio and stored at 8 kHz: one channel, little variety."

_VOICE = re.compile(r"^([a-z]{2,3})_[A-Z]{2}_[fm]_([A-Za-z]+)$")
_NOT_SPEECH = re.compile(r"^(?:silence/.*|beep|beeperr|.*-2tone|tt-monkeys)\.wav$", re.IGNORECASE)


def voice_folders(root: str | None = None) -> dict[str, tuple[str, str]]:
    """folder name -> (language, speaker label) of every voice folder under ``root``; at least one."""
    root = root or DEFAULT_ROOT
    found = {}
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            m = _VOICE.match(name)
            path = os.path.join(root, name)
            if m and os.path.isdir(path) and not os.path.islink(path):
                found[name] = (m.group(1), f"{RELEASE}/{m.group(2).lower()}")
    if not found:
        names = " ".join(PACKAGES)
        raise ConfigError(
            f"{root}: no Asterisk voice folders (<lang>_<COUNTRY>_<f|m>_<Name>); install the Debian packages "
            f"{names} (apt-get install {names}), or pass --source with the folder that holds them"
        )
    return found


def _files(folder: str) -> list[str]:
    """Every file under ``folder``, relative, sorted."""
    out = []
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        out.extend(os.path.relpath(os.path.join(here, f), folder) for f in files)
    return sorted(out)


def clips(root: str | None = None) -> Iterator[SourceClip | SourceFailure]:
    """Every file of every voice folder as a labelled clip or a failure with its reason."""
    root = root or DEFAULT_ROOT
    identical = IdenticalFiles()
    for folder, (lang, speaker) in voice_folders(root).items():
        base = os.path.join(root, folder)
        for rel in _files(base):
            path, origin = os.path.join(base, rel), f"{folder}/{rel}"
            if not rel.lower().endswith(".wav"):
                yield SourceFailure(origin, "not_speech", "not a .wav prompt")
                continue
            if _NOT_SPEECH.match(rel):
                yield SourceFailure(origin, "not_speech", "silence, a beep, a tone or a sound effect", speaker)
                continue
            yield identical.clip(path, origin, speaker=speaker, name=f"{RELEASE}_{folder.lower()}_{clip_name(rel)}",
                                 locale=lang, source=base)
