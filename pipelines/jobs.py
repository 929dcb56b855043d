"""The old home of ``Progress`` (now ``speechid.pipelines.metrics``), kept only for
tests/speechid/test_progress.py, which imports it from here."""

from speechid.pipelines.metrics import Progress

__all__ = ["Progress"]
