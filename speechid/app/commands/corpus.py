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
        click.option("--min-duration", default=DEFAULT_MIN_DURATION, show_default=True, type=click.FloatRange(min=0.0),
                     help="Shorter clips go to failures (too_short), as prep would fail them."),
        click.option("--max-duration", default=DEFAULT_MAX_DURATION, show_default=True, type=click.FloatRange(min=0.1)),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _write(clips, out_dir, release, seed, dev_speakers, test_speakers, min_clips, aliases, min_duration,
           max_duration, sources, caveat=""):
    from speechid.audio import Limits
    from speechid.corpora.release import parse_speaker_choice, write_release

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
              help="Folder holding en/ and es/.")
@click.option("--languages", default=None, show_default="every installed one",
              help="Comma-separated, of en, es.")
def drascula(out_dir, source, languages, **kw):
    """Drascula's voice acting, English and Spanish (apt-get install drascula drascula-spanish)."""
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
