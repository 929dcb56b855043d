"""A Beam job's own flags, and the check that every other flag is one Beam knows.

Each job defines its flags once, with ``JobFlags`` (Beam's idiom: ``run(argv)`` parses them with
``parse_known_args``; the ``speechid`` command forwards its arguments to the same ``run``). What is left
goes to Beam, and ``check_pipeline_args`` refuses it unless Beam's ``PipelineOptions`` know it, so a typo
(``--num-shard``) is an error naming the closest valid flag instead of a warning Beam logs while it runs
with defaults.
"""

from __future__ import annotations

import argparse
import difflib
import functools
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from speechid.errors import ConfigError


@functools.cache
def beam_flags() -> tuple[str, ...]:
    """Every flag Beam's PipelineOptions classes define (Dataflow, Flink, Spark, portable, ...)."""
    return tuple(a for action in _beam_parser()._actions for a in action.option_strings)


def _beam_parser():
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    try:  # registers Beam's DaskOptions (--dask_client_address, ...), which the dask runner reads
        import speechid.pipelines.dask_runner  # noqa: F401
    except ImportError:  # dask not installed: its flags stay unknown
        pass

    class Parser(_BeamArgumentParser):
        def error(self, message):  # argparse would print usage and exit; we want one typed error
            raise ConfigError(message)

    parser = Parser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    pending, adders = list(PipelineOptions.__subclasses__()), {}
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "_add_argparse_args" in vars(cls):  # a subclass that does not override it would add its parent's
            adders[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for cls in adders.values():
        cls._add_argparse_args(parser)
    return parser


class _DefaultsShown(argparse.HelpFormatter):
    """``(default: X)`` after a flag's help, where it has a default to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS, False) and not action.required and action.option_strings:
            text += f" (default: {action.default})"
        return text


class JobFlags(argparse.ArgumentParser):
    """A Beam job's own flags, defined once: ``python -m speechid.pipelines.<job>`` and ``speechid <job>``
    both parse them here. Defaults are shown in ``--help``; a bad value is a ``ConfigError`` (one line on
    the console), and every flag not defined here is left for Beam (``parse_known_args``)."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, allow_abbrev=False,
                         formatter_class=_DefaultsShown,
                         epilog="Every other flag goes to Beam (e.g. --direct_running_mode multi_processing "
                                "--direct_num_workers 2, --runner DaskRunner --dask_client_address HOST:PORT, "
                                "or --runner DataflowRunner --project ... --region ... "
                                "--temp_location gs://...); one Beam does not know either is an error.")

    def error(self, message: str):
        raise ConfigError(message)

    def own_flags(self) -> tuple[str, ...]:
        return tuple(f for action in self._actions for f in action.option_strings if f.startswith("--"))


def check_pipeline_args(args: Sequence[str], own_flags: Sequence[str] = ()) -> None:
    """Refuse arguments that neither the job (``own_flags``, already parsed out) nor Beam knows.

    Beam itself only logs "Unparseable argument" and runs with its defaults, so ``--num-shard 3`` or
    ``--sample_rate 8000`` would change nothing without a word. The error names the closest valid flag.
    """
    _, unknown = _beam_parser().parse_known_args(list(args))
    for token in unknown:
        if not token.startswith("-"):
            raise ConfigError(f"unexpected argument {token!r} (flags take the form --name value)")
        name = token.split("=", 1)[0]
        known = {f.lstrip("-").replace("_", "-"): f for f in beam_flags() if f.startswith("--")}
        known.update({f.lstrip("-").replace("_", "-"): f for f in own_flags})  # ours win a tie
        close = difflib.get_close_matches(name.lstrip("-").replace("_", "-"), list(known), n=1)
        hint = f"; did you mean {known[close[0]]}?" if close else ""
        raise ConfigError(f"unknown flag {name}: neither speechid nor Beam knows it{hint}")
