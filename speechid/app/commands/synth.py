"""`speechid synth`: a synthetic Common Voice release for demos and tests."""

import click


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--speakers", default=20, show_default=True, type=click.IntRange(min=3), help="True voices.")
@click.option("--clips-per-speaker", default=10, show_default=True, type=click.IntRange(min=1),
              help="Clips recorded per true voice of the train split.")
@click.option("--heldout-clips", default=None, type=click.IntRange(min=1), show_default="--clips-per-speaker",
              help="Clips per dev and test voice (a voice with an alias has them split between its two "
                   "client_ids); more let calibration measure bigger groups.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--aliases", default=0, show_default=True, type=click.IntRange(min=0),
              help="Test speakers recorded under two client_ids each (ground truth in OUT_DIR/aliases.tsv).")
@click.option("--plant-mislabels", "mislabels", default=0, show_default=True, type=click.IntRange(min=0),
              help="Test speakers' clips filed under another test speaker's client_id (each a row in "
                   "OUT_DIR/aliases.tsv with its clip; `speechid dedup --truth` scores the flags).")
@click.option("--plant-faults", is_flag=True, help="Add bad rows and clips (listed in OUT_DIR/faults.tsv).")
@click.option("--locale", default="en", show_default=True)
@click.option("--min-duration", default=1.5, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--max-duration", default=4.0, show_default=True, type=click.FloatRange(min=0.1))
def synth(out_dir, speakers, clips_per_speaker, heldout_clips, seed, aliases, mislabels, plant_faults, locale,
          min_duration, max_duration):
    """Write OUT_DIR/cv-corpus-synth-<locale>.tar.gz in Common Voice layout (48 kHz MP3 + TSVs)."""
    from speechid.corpora.synth import make_corpus

    if min_duration > max_duration:
        raise click.BadParameter(f"{min_duration} > --max-duration {max_duration}", param_hint="--min-duration")
    try:
        result = make_corpus(out_dir, speakers=speakers, clips_per_speaker=clips_per_speaker,
                             heldout_clips=heldout_clips, seed=seed, aliases=aliases, mislabels=mislabels,
                             plant_faults=plant_faults,
                             locale=locale, min_duration=min_duration, max_duration=max_duration)
    except ValueError as e:  # the sizes do not fit together (e.g. more aliases or mislabels than speakers hold)
        raise click.BadParameter(str(e)) from None
    click.echo(result.summary())
