"""`speechid corpus`: speaker-labelled real speech -> a release in Common Voice layout.

The library (``speechid.corpora``) does the work; these commands check what they can and forward.
Nothing is installed here: a missing package is one line naming it.
"""

import click

from speechid.audio import DEFAULT_MAX_DURATION, DEFAULT_MIN_DURATION


def _common(fn):
    options = [
        click.argument("out_dir", type=click.Path(file_okay=False)),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of the speaker split."),
        click.option("--dev-speakers", default=None,
                     show_default="15% of those with --min-clips clips",
                     help="How many dev speakers, or their labels, comma-separated."),
        click.option("--test-speakers", default=None,
                     show_default="20%", help="How many test speakers, or their labels, comma-separated."),
        click.option("--min-clips", default=10, show_default=True, type=click.IntRange(min=1),
                     help="Speakers with fewer clips go to train only."),
        click.option("--aliases", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Held-out speakers recorded under two client_ids each "
                     "(ground truth in OUT_DIR/aliases.tsv)."),
        click.option("--plant-mislabels", "mislabels", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Test speakers' clips filed under another test speaker's client_id (each a row in "
                     "OUT_DIR/aliases.tsv with its clip; `speechid dedup --truth` scores the flags)."),
        click.option("--min-duration", default=DEFAULT_MIN_DURATION, show_default=True, type=click.FloatRange(min=0.0),
                     help="Shorter clips go to failures (too_short), as prep would fail them."),
        click.option("--max-duration", default=DEFAULT_MAX_DURATION, show_default=True, type=click.FloatRange(min=0.1)),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _write(clips, out_dir, release, seed, dev_speakers, test_speakers, min_clips, aliases, min_duration,
           max_duration, sources, caveat="", mislabels=0):
    from speechid.audio import Limits
    from speechid.corpora.release import write_release
    from speechid.corpora.splits import parse_speaker_choice

    if min_duration > max_duration:
        raise click.BadParameter(f"{min_duration} > --max-duration {max_duration}", param_hint="--min-duration")
    result = write_release(
        out_dir,
        release,
        clips,
        seed=seed,
        dev_speakers=parse_speaker_choice(dev_speakers),
        test_speakers=parse_speaker_choice(test_speakers),
        min_clips=min_clips,
        aliases=aliases,
        limits=Limits(min_duration=min_duration, max_duration=max_duration),
        sources=sources,
        caveat=caveat,
        mislabels=mislabels,
        progress=lambda text: click.echo(f"speechid corpus: {text}", err=True),
    )
    click.echo(result.table())
    click.echo(result.summary())
    if caveat:
        click.echo(f"note: {caveat}")


@click.group()
def corpus():
    """Real, speaker-labelled speech -> OUT_DIR/<name>-<locale>.tar.gz in Common Voice layout, plus
    speakers.tsv, aliases.tsv, failures.tsv and corpus.json. `speechid prep` reads the archives unchanged."""


@corpus.command()
@_common
@click.option("--source", default=None, show_default="the Debian package's path",
              help="queen.1c or its folder.")
def fotaq(out_dir, source, **kw):
    """Flight of the Amazon Queen's voice acting (apt-get install flight-of-the-amazon-queen)."""
    from speechid.corpora import fotaq as maker

    path = maker.resolve_source(source)
    _write(maker.clips(path), out_dir, maker.RELEASE, sources=[path], caveat=maker.CAVEAT, **kw)


@corpus.command()
@_common
@click.option("--source", default=None, show_default="the Debian packages' path",
              help="Folder holding en/, es/ and it/.")
@click.option("--languages", default=None, show_default="every installed one",
              help="Comma-separated, of en, es, it.")
def drascula(out_dir, source, languages, **kw):
    """Drascula's voice acting: English, Spanish and Italian casts
    (apt-get install drascula drascula-spanish drascula-italian)."""
    from speechid.corpora import drascula as maker

    wanted = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    folders = maker.resolve_languages(source, wanted)
    _write(maker.clips(source, list(folders)), out_dir, maker.RELEASE, sources=list(folders.values()),
           caveat=maker.CAVEAT, **kw)


@corpus.command()
@click.argument("audio_dir", type=click.Path(file_okay=False))
@_common
@click.option("--speakers", "speakers_tsv", required=True, type=click.Path(dir_okay=False),
              help="TSV of path<TAB>speaker[<TAB>split], paths relative to AUDIO_DIR.")
@click.option("--name", default=None, show_default="AUDIO_DIR's folder name", help="Release name.")
@click.option("--locale", default="und", show_default=True, help="Language code written to the TSVs.")
def folder(audio_dir, out_dir, speakers_tsv, name, locale, **kw):
    """Any folder of audio with a path/speaker TSV."""
    import os

    from speechid.corpora import folder as maker

    release = name or os.path.basename(os.path.normpath(audio_dir)) or "corpus"
    _write(maker.clips(audio_dir, speakers_tsv, locale), out_dir, maker.clip_name(release),
           sources=[audio_dir, speakers_tsv], **kw)


@corpus.command()
@_common
@click.option("--source", default=None, show_default="the Debian package's path",
              help="Folder holding sky.dnr, sky.dsk and sky.cpt.")
def bass(out_dir, source, **kw):
    """Beneath a Steel Sky's voice acting, speakers from the game's scripts
    (apt-get install beneath-a-steel-sky)."""
    from speechid.corpora import bass as maker

    root = maker.resolve_source(source)
    _write(maker.clips(root), out_dir, maker.RELEASE, sources=[root], caveat=maker.CAVEAT, **kw)


@corpus.command()
@_common
@click.option("--source", default=None, show_default="the Debian packages' path",
              help="Folder holding the <lang>_<COUNTRY>_<f|m>_<Name> voice folders.")
def asterisk(out_dir, source, **kw):
    """Asterisk's telephone prompts, five voices in five languages
    (apt-get install asterisk-core-sounds-en-wav ... asterisk-prompt-it-menardi-wav)."""
    from speechid.corpora import asterisk as maker

    folders = maker.voice_folders(source)
    root = source or maker.DEFAULT_ROOT
    _write(maker.clips(root), out_dir, maker.RELEASE, sources=[f"{root}/{name}" for name in folders],
           caveat=maker.CAVEAT, **kw)


def _kdeedu_command(recipe: str, package: str):
    @corpus.command(name=recipe, help=f"KDE's {recipe} letters and words, one credited reader per language "
                    f"(apt-get install {package}).")
    @_common
    @click.option("--source", default=None, show_default="the Debian package's path",
                  help="Folder holding the language folders.")
    @click.option("--uncredited", is_flag=True,
                  help="Take each language folder no credit covers as one voice (an assumption).")
    def command(out_dir, source, uncredited, **kw):
        from speechid.corpora import kdeedu

        root = kdeedu.resolve_root(recipe, source)
        _write(kdeedu.clips(recipe, root, uncredited), out_dir, recipe, sources=[root], caveat=kdeedu.CAVEAT,
               **kw)

    return command


klettres = _kdeedu_command("klettres", "klettres-data")
ktuberling = _kdeedu_command("ktuberling", "ktuberling-data")


@corpus.command(name="all")
@click.argument("out_root", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of each corpus's speaker split.")
@click.option("--only", default=None, show_default="every recipe", help="Comma-separated recipe names.")
def all_recipes(out_root, seed, only):
    """Every installed real-voice recipe, each into OUT_ROOT/<recipe> (one release per corpus, so prep can
    take any mix). A recipe whose package is missing is named on one line and skipped; none installed: exit 2."""
    import os

    from speechid.corpora.recipes import RECIPES, source
    from speechid.errors import ConfigError

    names = [n.strip() for n in only.split(",") if n.strip()] if only else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: choose from {', '.join(RECIPES)}", param_hint="--only")
    built, missing = [], []
    for name in names:
        try:
            src = source(name)
        except ConfigError as e:
            missing.append(name)
            click.echo(f"speechid corpus all: skipping {name}: {e}", err=True)
            continue
        click.echo(f"== {name}")
        _write(src.clips, os.path.join(out_root, name), src.release, seed, None, None, 10, 0, DEFAULT_MIN_DURATION,
               DEFAULT_MAX_DURATION, src.paths, src.caveat)
        built.append(name)
    if not built:
        raise ConfigError(f"no real-voice recipe is installed ({', '.join(missing)}); "
                          "see `speechid corpus NAME --help`")
    click.echo(f"built {len(built)} corpora under {out_root}: {', '.join(built)}"
               + (f"; not installed: {', '.join(missing)}" if missing else ""))
