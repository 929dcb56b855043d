"""`speechid demo`: the whole chain on a generated corpus, ending in a summary table and report.html."""

import logging

import click


@click.command()
@click.option("--workdir", default="demo-work", show_default=True, type=click.Path(file_okay=False),
              help="Where every stage writes; reused (replaced stage by stage) on a second run.")
@click.option("--speakers", default=None, type=click.IntRange(min=10), help="Synthetic voices [100].")
@click.option("--clips-per-speaker", default=None, type=click.IntRange(min=4), help="[12]")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Training epochs [the demo's default].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--report-only", is_flag=True,
              help="Write report.html again from the finished run in --workdir; run nothing.")
def demo(workdir, speakers, clips_per_speaker, epochs, seed, report_only):
    """synth -> prep -> train -> evaluate -> embed -> index -> dedup -> query, in about 10 minutes on 2 CPUs."""
    from dataclasses import replace

    from speechid.demo import DemoConfig, rebuild_report, run_demo, summary_rows

    if report_only:
        click.echo(f"report: {rebuild_report(workdir)}")
        return

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The demo prints its own progress; Beam's forwarded worker warnings (no semi_persistent_directory, no
    # resource module) say nothing actionable here. `speechid prep` / `embed` keep them.
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    config = DemoConfig(seed=seed)
    overrides = {k: v for k, v in dict(speakers=speakers, clips_per_speaker=clips_per_speaker, epochs=epochs).items()
                 if v is not None}
    if "speakers" in overrides:
        overrides["aliases"] = max(2, overrides["speakers"] // 12)
    config = replace(config, **overrides)
    res = run_demo(workdir, config, log=lambda s: click.echo(s))
    rows = summary_rows(res)
    width = max(len(k) for k, _ in rows)
    click.echo("\nspeechid demo summary")
    click.echo("-" * (width + 50))
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")
    click.echo("-" * (width + 50))
    click.echo(f"report: {res.report}")
