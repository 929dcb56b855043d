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
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


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
