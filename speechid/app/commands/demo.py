"""`speechid demo`: the whole chain on a generated corpus (or, with --real, on the voice acting of
Debian packages beside synthetic voices), ending in a summary table and report.html."""

import logging

import click


@click.command()
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Where every stage writes; reused (replaced stage by stage) on a second run "
              "[demo-work; demo-real-work with --real].")
@click.option("--real", is_flag=True,
              help="Real voices: FOTAQ characters (aliases planted among the held-out ones), Beneath a Steel Sky's "
              "and KTuberling's voices and synthetic speakers, trained with the recommended recipe, scored first on "
              "corpora never trained on (Drascula's casts, Asterisk's prompts, KLettres' readers), then on held-out "
              "FOTAQ characters. Needs apt-get install flight-of-the-amazon-queen; every other corpus is used when "
              "its package is installed (README: Real voices, offline).")
@click.option("--aliases", default=None, type=click.IntRange(min=0),
              help="Held-out speakers recorded under two client_ids [8 synthetic; 4 FOTAQ characters with --real].")
@click.option("--mislabels", default=None, type=click.IntRange(min=0),
              help="Synthetic test voices' clips filed under another test voice's client_id [24; a quarter of "
              "--speakers when that is given: 1% of the clips].")
@click.option("--train-minutes", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="--real: the training time budget [14].")
@click.option("--speakers", default=None, type=click.IntRange(min=10), help="Synthetic voices [100].")
@click.option("--clips-per-speaker", default=None, type=click.IntRange(min=4),
              help="Clips of each synthetic train voice [24].")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Training epochs [8].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--report-only", is_flag=True,
              help="Write report.html again from the finished run in --workdir; run nothing.")
def demo(workdir, real, aliases, mislabels, train_minutes, speakers, clips_per_speaker, epochs, seed, report_only):
    """synth -> prep -> train -> evaluate -> embed -> index -> dedup -> query, in about 10 minutes on 2 CPUs
    (--real: about 20 minutes)."""
    from dataclasses import replace

    from speechid.app.demo import DemoConfig, run_demo, summary_rows
    from speechid.app.report import rebuild_report

    workdir = workdir or ("demo-real-work" if real else "demo-work")
    if real:
        if any(v is not None for v in (speakers, clips_per_speaker, epochs, mislabels)):
            raise click.UsageError("--speakers, --clips-per-speaker, --epochs and --mislabels size the synthetic demo; "
                                   "--real takes --aliases and --train-minutes")
        from speechid.app.demo_real import find_sources

        sources = None if report_only else find_sources()  # before any work: one line naming the packages
    elif train_minutes is not None:
        raise click.UsageError("--train-minutes is for --real (the synthetic demo takes --epochs)")
    if report_only:
        click.echo(f"report: {rebuild_report(workdir)}")
        return

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The demo prints its own progress; Beam's forwarded worker warnings (no semi_persistent_directory, no
    # resource module) say nothing actionable here. `speechid prep` / `embed` keep them.
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if real:
        from speechid.app.demo_real import RealDemoConfig, run_real_demo
        from speechid.app.demo_real import summary_rows as real_rows

        overrides = {k: v for k, v in dict(aliases=aliases, train_minutes=train_minutes).items() if v is not None}
        config = replace(RealDemoConfig(seed=seed), **overrides)
        result = run_real_demo(workdir, config, sources, log=lambda s: click.echo(s))
        rows = real_rows(result)
    else:
        config = DemoConfig(seed=seed)
        overrides = {k: v for k, v in dict(speakers=speakers, clips_per_speaker=clips_per_speaker,
                                           epochs=epochs).items() if v is not None}
        if "speakers" in overrides:
            overrides["aliases"] = max(2, overrides["speakers"] // 12)
            overrides["mislabels"] = max(2, overrides["speakers"] // 4)
        if aliases is not None:
            overrides["aliases"] = aliases
        if mislabels is not None:
            overrides["mislabels"] = mislabels
        config = replace(config, **overrides)
        result = run_demo(workdir, config, log=lambda s: click.echo(s))
        rows = summary_rows(result)
    width = max(len(k) for k, _ in rows)
    click.echo(f"\nspeechid demo{' --real' if real else ''} summary")
    click.echo("-" * (width + 50))
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")
    click.echo("-" * (width + 50))
    click.echo(f"report: {result.report}")
