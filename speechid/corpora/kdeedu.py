"""Letters, syllables and words read for children: KDE's KLettres and KTuberling (Debian packages
``klettres-data`` and ``ktuberling-data``). Short clips (~1 s), one folder per language.

- KLettres: ``/usr/share/klettres/<lang>/{alpha,syllab}/*.ogg``, listed by ``<lang>/sounds.xml``.
- KTuberling: ``/usr/share/ktuberling/sounds/<lang>/*.ogg``, listed by ``<lang>.soundtheme``.

Who speaks comes from the credits, not the files: the KLettres handbook's "Credits and License"
(``/usr/share/doc/HTML/en/klettres/index.cache.bz2``) names one reader for Czech, Danish, Dutch, English,
French, German, Hebrew and Italian, two for Brazilian Portuguese, Spanish and Low Saxon; ``ar/sounds.xml``
names its one reader; ``nn`` was made with a commercial text-to-speech service (``nn/sounds.xml``). The
KTuberling handbook credits John Calhoun with the English sounds and no one else. A language folder is one
speaker where the credits name one person; folders whose credits name two people, or a machine, are
``unlabelled``; folders no credit covers are ``unlabelled`` too unless ``uncredited=True`` takes each as one
voice (``klettres/<lang>``), an assumption the speaker label then says.

A file shared byte for byte between folders (``en`` and ``en_GB``) is one clip (``duplicate`` for the
second). The Ogg Vorbis bytes are kept as they are. The lists are the XML files the two applications read
themselves (KLettres' ``sounds.xml``, KTuberling's ``.soundtheme``), as the Debian packages install them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from speechid.corpora.folder import clip_name
from speechid.corpora.sources import IdenticalFiles, SourceClip, SourceFailure
from speechid.errors import ConfigError

KLETTRES = {
    "package": "klettres-data",
    "root": "/usr/share/klettres",
    "credits": {
        "ar": "rafik", "cs": "eva_mikulcikova", "da": "erik_kjaer_pedersen", "nl": "geert_stams",
        "en": "robert_wadley", "fr": "ludovic_grossard", "de": "helmut_kriege", "he": "assaf_gorgon",
        "it": "pietro_pasotti",
    },
    "not_one_person": {
        "pt_BR": "the credits name two readers (a father and his son)",
        "es": "the credits name two readers",
        "nds": "the credits name two readers",
        "nn": "made with a text-to-speech service, not a person",
    },
}
KTUBERLING = {
    "package": "ktuberling-data",
    "root": "/usr/share/ktuberling/sounds",
    "credits": {"en": "john_calhoun"},
    "not_one_person": {},
}
RECIPES = {"klettres": KLETTRES, "ktuberling": KTUBERLING}
CAVEAT = ("Speakers are the readers the credits name, one per language folder; clips are single letters, "
          "syllables or words (about a second).")


def resolve_root(recipe: str, source: str | None) -> str:
    """The folder holding the recipe's language folders; a ConfigError naming the package when absent."""
    spec = RECIPES[recipe]
    root = source or spec["root"]
    if not os.path.isdir(root) or not any(_language_folders(root)):
        raise ConfigError(
            f"{root}: no {recipe} language folders with .ogg files; install the Debian package "
            f"{spec['package']} (apt-get install {spec['package']}) or pass --source with the folder that holds them"
        )
    return root


def _language_folders(root: str) -> Iterator[tuple[str, str]]:
    for lang in sorted(os.listdir(root)):
        folder = os.path.join(root, lang)
        if os.path.isdir(folder) and any(name.endswith(".ogg") for _, _, names in os.walk(folder) for name in names):
            yield lang, folder


def speaker_of(recipe: str, lang: str, uncredited: bool = False) -> tuple[str | None, str]:
    """(speaker label or None, why None) for a language folder of ``recipe``."""
    spec = RECIPES[recipe]
    if lang in spec["credits"]:
        return f"{recipe}/{spec['credits'][lang]}", ""
    if lang in spec["not_one_person"]:
        return None, spec["not_one_person"][lang]
    if uncredited:
        return f"{recipe}/{lang}-uncredited", ""
    return None, "no credit names who reads this language (uncredited=True takes the folder as one voice)"


def clips(recipe: str, root: str | None = None, uncredited: bool = False) -> Iterator[SourceClip | SourceFailure]:
    """Every ``.ogg`` of every language folder as a labelled clip or a failure with its reason."""
    root = resolve_root(recipe, root)
    identical = IdenticalFiles()
    for lang, folder in _language_folders(root):
        speaker, why = speaker_of(recipe, lang, uncredited)
        for here, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                if not name.endswith(".ogg"):
                    continue
                path = os.path.join(here, name)
                rel = os.path.relpath(path, root)
                if speaker is None:
                    yield SourceFailure(rel, "unlabelled", why)
                    continue
                yield identical.clip(path, rel, speaker=speaker, name=f"{recipe}_{clip_name(rel)}",
                                     locale=lang.split("_")[0].split("@")[0], source=folder)
