"""Every real-voice recipe by name: what ``speechid corpus all`` and the quality benchmark build.

``source(name)`` finds a recipe's installed files (a ConfigError naming its Debian packages when they are
missing) and returns what ``release.write_release`` needs: the clips, the release name, the paths read and
the recipe's caveat.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from speechid.corpora import asterisk, bass, drascula, fotaq, kdeedu
from speechid.corpora.sources import SourceClip, SourceFailure


@dataclass(frozen=True)
class RecipeSource:
    release: str
    clips: Iterator[SourceClip | SourceFailure]
    paths: list[str]
    caveat: str


def _fotaq(root: str | None, **_) -> RecipeSource:
    path = fotaq.resolve_source(root)
    return RecipeSource(fotaq.RELEASE, fotaq.clips(path), [path], fotaq.CAVEAT)


def _drascula(root: str | None, **_) -> RecipeSource:
    folders = drascula.resolve_languages(root, None)
    return RecipeSource(drascula.RELEASE, drascula.clips(root, list(folders)), list(folders.values()), drascula.CAVEAT)


def _bass(root: str | None, **_) -> RecipeSource:
    path = bass.resolve_source(root)
    return RecipeSource(bass.RELEASE, bass.clips(path), [path], bass.CAVEAT)


def _asterisk(root: str | None, **_) -> RecipeSource:
    root = root or asterisk.DEFAULT_ROOT
    folders = asterisk.voice_folders(root)
    return RecipeSource(asterisk.RELEASE, asterisk.clips(root), [os.path.join(root, f) for f in folders],
                        asterisk.CAVEAT)


def _kdeedu(recipe: str) -> Callable[..., RecipeSource]:
    def source(root: str | None, uncredited: bool = False) -> RecipeSource:
        root = kdeedu.resolve_root(recipe, root)
        return RecipeSource(recipe, kdeedu.clips(recipe, root, uncredited), [root], kdeedu.CAVEAT)

    return source


RECIPES: dict[str, Callable[..., RecipeSource]] = {
    "fotaq": _fotaq,
    "drascula": _drascula,
    "bass": _bass,
    "asterisk": _asterisk,
    "klettres": _kdeedu("klettres"),
    "ktuberling": _kdeedu("ktuberling"),
}


def source(name: str, root: str | None = None, **options) -> RecipeSource:
    """The installed files of recipe ``name`` (``root``: another folder than the package's; ``options``:
    the recipe's own, e.g. ``uncredited=True`` for klettres and ktuberling)."""
    return RECIPES[name](root, **options)
