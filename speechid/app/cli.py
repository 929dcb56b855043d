"""The ``speechid`` command. Each subcommand lives with its part in ``speechid/app/commands/`` and is
imported only when run, so ``speechid --help`` does not pay for TensorFlow or Beam.

Errors for people: a bad path, a corrupt file or a wrong flag prints one line on stderr and exits 2.
Set SPEECHID_DEBUG=1 to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import threading

import click

from speechid import __version__
from speechid.errors import SpeechIdError

# name -> "module:attribute": the module is imported only when its command runs (or help lists it).
COMMANDS = {
    "synth": "speechid.app.commands.synth:synth",
    "corpus": "speechid.app.commands.corpus:corpus",
    "prep": "speechid.app.commands.prep:prep",
    "train": "speechid.app.commands.model:train",
    "evaluate": "speechid.app.commands.model:evaluate",
    "compare": "speechid.app.commands.model:compare",
    "calibrate": "speechid.app.commands.model:calibrate",
    "embed": "speechid.app.commands.embed:embed",
    "index": "speechid.app.commands.index:index",
    "dedup": "speechid.app.commands.index:dedup",
    "query": "speechid.app.commands.index:query",
    "demo": "speechid.app.commands.demo:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx, args):
        name = click.utils.make_str(args[0]) if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; the commands: {', '.join(self.list_commands(ctx))}"
            raise click.UsageError(f"no such command '{name}'{hint}", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        """Each command with the whole first sentence of its help (click cuts it at ~45 characters)."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, _first_sentence(cmd.help or "")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _first_sentence(text: str) -> str:
    """The first sentence of a help text's first paragraph, whole."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    match = re.search(r"(?<=[.!?])\s", paragraph)
    return paragraph[: match.start()] if match else paragraph


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="speechid")
def cli():
    """speechid: same person or not, at corpus scale.

    synth -> prep -> train -> evaluate -> embed -> index -> dedup / query; `speechid demo` runs them all.
    """


def _fail(ctx_name: str, message: str, code: int = 2) -> None:
    message = " ".join(str(message).split())  # one line, whatever the exception held
    click.echo(f"{ctx_name}: error: {message}", err=True)
    sys.exit(code)


# TensorFlow's C++ side prints INFO/WARNING lines (oneDNN, "no CUDA drivers") before absl logging is
# initialised, so no environment variable silences them; on a machine without a GPU it also prints a
# cuInit error. They bury the one line a user needs, so the CLI drops exactly those at the fd level.
_NATIVE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ \S+:\d+\] "
    rb"|E\d{4} \d+:\d+:\d+\.\d+ +\d+ \S+:\d+\] .*(?:cuInit|cuda)"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)


class _NativeLogFilter:
    """Routes fd 2 through a pipe and forwards every line but TensorFlow's start-up noise."""

    def __init__(self):
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._reader = os.fdopen(read_end, "rb", buffering=0)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        pending = b""
        while chunk := self._reader.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if _INTERRUPTED.is_set() and not line.startswith(b"speechid"):
                    continue  # local workers hit by the same Ctrl-C print their own tracebacks into our stderr
                if not _NATIVE_NOISE.match(line):
                    os.write(self._saved, line + b"\n")
        if pending and not _NATIVE_NOISE.match(pending):
            os.write(self._saved, pending)

    def close(self):
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end in this process: the pump sees EOF
        self._thread.join(timeout=5)
        os.close(self._saved)


_INTERRUPTED = threading.Event()


def _interrupt(signum, frame):
    # Ctrl-C and SIGTERM (kill, a scheduler's timeout) clean up alike: staging dropped, worker processes stopped.
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # a background job ignores Ctrl-C: keep it so
                handlers[sig] = signal.signal(sig, _interrupt)
    log_filter = None if os.environ.get("SPEECHID_DEBUG") else _NativeLogFilter()
    try:
        _main(argv)
    finally:
        if log_filter is not None:
            log_filter.close()
        for sig, handler in handlers.items():  # main() called from Python (tests, notebooks) leaves them as found
            signal.signal(sig, handler)


def _main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    prog = "speechid" + (f" {args[0]}" if args and args[0] in COMMANDS else "")
    try:
        cli.main(args=args, prog_name="speechid", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:  # click's name for a KeyboardInterrupt inside a command (Ctrl-C, SIGTERM)
        _fail(prog, "interrupted", 130)
    except click.ClickException as e:
        _fail(prog, e.format_message())
    except SpeechIdError as e:
        _fail(prog, str(e))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        _fail(prog, f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
    except KeyboardInterrupt:
        _fail(prog, "interrupted", 130)
    except Exception as e:  # a bug, not the user's input: still one line unless debugging
        if os.environ.get("SPEECHID_DEBUG"):
            raise
        _fail(prog, f"unexpected {type(e).__name__}: {e} (set SPEECHID_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    main()
