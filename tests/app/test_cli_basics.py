"""The CLI's promise: a bad path, a corrupt file or a wrong flag gives one line on stderr and exit 2."""

import subprocess
import sys

import pytest

from speechid import __version__


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "speechid", *args], capture_output=True, text=True, timeout=120, **kw)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "synth" in r.stdout
    listing = " ".join(r.stdout.split("Commands:")[1].split())  # each command's first sentence, whole
    assert "Find client_ids that are one voice and clips filed under the wrong one." in listing
    assert "Nearest clips or speakers of each CLIP, with Euclidean distance and same/different verdict." in listing
    assert "..." not in listing
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_a_misspelt_command_gets_the_closest_one():
    r = run("querry", "a.wav")
    assert r.returncode == 2 and r.stderr.strip() == "speechid: error: no such command 'querry'; did you mean 'query'?"


@pytest.mark.parametrize(
    "args",
    [
        ("nonsense",),
        ("synth",),  # missing argument
        ("synth", "/tmp/x", "--speakers", "two"),  # wrong type
        ("synth", "/tmp/x", "--no-such-flag"),
        ("synth", "/tmp/x", "--speakers", "3", "--aliases", "9"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "error" in lines[0] and "Traceback" not in r.stderr


def test_synth_writes_a_release(tmp_path):
    r = run("synth", str(tmp_path), "--speakers", "3", "--clips-per-speaker", "2", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cv-corpus-synth-en.tar.gz").stat().st_size > 1000
    assert "3 speakers" in r.stdout


def _threshold_cases():
    """(command line, flag) for every threshold flag; paths are filled in by the test (empty folders and files:
    the value must be refused before any model, index or data is read)."""
    cases = [
        (["compare", "--model", "{d}", "{f}", "{f2}"], "--threshold"),
        (["evaluate", "--model", "{d}", "--data", "{d}"], "--threshold"),
        (["query", "--index", "{d}", "--model", "{d}", "{f}"], "--threshold"),
        (["index", "--embeddings", "{d}", "--output", "{o}"], "--threshold"),
        (["dedup", "--index", "{d}", "--output", "{o}"], "--threshold"),
        (["dedup", "--index", "{d}", "--output", "{o}"], "--merge-threshold"),
    ]
    return [pytest.param(argv, flag, id=f"{argv[0]} {flag}") for argv, flag in cases]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf"])
@pytest.mark.parametrize("argv, flag", _threshold_cases())
def test_every_threshold_flag_refuses_non_positive_nan_and_infinite_values(tmp_path, capsys, argv, flag, value):
    from speechid.app import cli

    (tmp_path / "d").mkdir()
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    paths = {"d": tmp_path / "d", "f": tmp_path / "a.wav", "f2": tmp_path / "b.wav", "o": tmp_path / "out"}
    args = [argv[0], flag, value] + [a.format(**paths) for a in argv[1:]]
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == f"speechid {argv[0]}: error: Invalid value for '{flag}': {value} is not a positive, finite number.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "d"]  # nothing written


def test_every_threshold_flag_has_the_one_threshold_type():
    from speechid.app import cli
    from speechid.app.commands import THRESHOLD

    def commands(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, f"{path} {name}")

    flags = {}
    for name in cli.COMMANDS:
        for path, cmd in commands(cli.cli.get_command(None, name), name):
            flags.update({f"{path} {p.opts[0]}": p.type for p in cmd.params if "threshold" in p.name})
    assert sorted(flags) == ["compare --threshold", "dedup --merge-threshold", "dedup --mislabel-threshold",
                             "dedup --threshold", "evaluate --threshold", "index --threshold", "query --threshold"]
    assert all(t is THRESHOLD for t in flags.values()), flags
