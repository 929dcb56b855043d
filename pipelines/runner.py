"""Which runner a job runs on, and running it so that Ctrl-C stops it.

With no ``--runner`` (or ``--runner DirectRunner``) Beam 2.77 first tries the Prism runner, which
downloads a binary on first use. A default run here must never reach the network, so those cases go to
Beam's FnApiRunner directly: the same engine DirectRunner uses for batch, honouring
``--direct_num_workers`` and ``--direct_running_mode`` (in_memory, multi_threading, multi_processing);
Beam's maintainers name ``FnApiRunner`` as the way to keep the classic Python local runner
(apache/beam#34612). ``--runner DaskRunner`` runs on a dask.distributed cluster with speechid's runner
(``speechid.pipelines.dask_runner``: ``--dask_client_address HOST:PORT`` names the scheduler). Any other
runner (Dataflow, Flink, Spark, Prism by name) is passed through untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import traceback

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from speechid.pipelines.workers import SINGLE_THREADED_TF, quiet_worker_logs, stop_child_processes, worker_environment

_LOCAL_RUNNERS = (None, "", "DirectRunner", "direct", "directrunner", "FnApiRunner")
_DASK_RUNNERS = ("daskrunner", "dask")


def make_pipeline(beam_args: list[str], test_pipeline=None) -> beam.Pipeline:
    """A Pipeline for ``beam_args``; local runs use FnApiRunner so nothing is downloaded."""
    if test_pipeline is not None:
        return test_pipeline
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    if runner in _LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        quiet_worker_logs()
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    if str(runner).lower() in _DASK_RUNNERS:
        from speechid.pipelines.dask_runner import DaskRunner

        # A local cluster started for the job gets one TensorFlow thread per worker (one worker per core).
        return beam.Pipeline(runner=DaskRunner(worker_env=SINGLE_THREADED_TF), options=options)
    return beam.Pipeline(options=options)


def run_job(p: beam.Pipeline, job: str, worker_env: dict[str, str], local_workers: bool):
    """Run ``p`` to its end (``run_and_wait``) and return its result. ``worker_env`` is set while local worker
    processes start (``local_workers``: the local runner's multi_processing mode; ``worker_environment``).
    RuntimeError when the job ended in another state than done."""
    with worker_environment(worker_env, local_workers):
        result, state = run_and_wait(p)
    if state is not None and str(state).upper().rsplit(".", 1)[-1] not in ("DONE", "RUNNING"):
        raise RuntimeError(f"{job} pipeline ended in state {state}")
    return result


def run_and_wait(p: beam.Pipeline):
    """``p.run()`` then ``wait_until_finish()``, in a helper thread so Ctrl-C and SIGTERM reach us; returns
    (result, final state).

    Beam's local runner waits for bundle results in a blocking wait that a signal delivered to one of
    its gRPC threads never interrupts: Ctrl-C was ignored and the job (worker processes included) ran
    on to its end. Here the main thread waits in short slices; on an interrupt this process's worker
    processes are terminated and the KeyboardInterrupt goes on to the caller, which drops its staging. A
    job on a cluster (``DaskJobResult``) is cancelled there first.
    """
    box: dict = {}

    def target():
        try:
            box["result"] = p.run()
            box["state"] = box["result"].wait_until_finish()
        except BaseException as e:  # handed to the waiting thread as it is
            box["error"] = e

    if threading.current_thread() is not threading.main_thread():
        target()  # signals only ever reach the main thread: nothing to gain from another hop
    else:
        thread = threading.Thread(target=target, name="speechid-pipeline", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            # The runner's threads go on until their workers vanish, and log each broken connection with a
            # traceback: the user asked to stop, so the one line the CLI prints is all they should see.
            for name in ["apache_beam", *logging.root.manager.loggerDict]:
                if name.startswith("apache_beam"):
                    logging.getLogger(name).setLevel(logging.CRITICAL + 1)
            threading.excepthook = _quiet_about_lost_workers(threading.excepthook)
            result = box.get("result")
            if result is not None and getattr(result, "cancel_on_interrupt", False):
                with contextlib.suppress(Exception):  # the interrupt matters more than a cancel that failed
                    result.cancel()
            stop_child_processes()
            raise
    if "error" in box:
        raise box["error"]
    return box["result"], box["state"]


def _quiet_about_lost_workers(hook):
    """A threading.excepthook that drops what Beam's threads raise once their workers are gone."""
    def quiet(args):
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
        if any(f"{os.sep}apache_beam{os.sep}" in f.filename or f"{os.sep}grpc{os.sep}" in f.filename for f in frames):
            return
        hook(args)

    return quiet


def local_worker_count(beam_args: list[str]) -> int | None:
    """How many workers a local run uses (for progress lines); None for other runners (their own UI shows it)."""
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner not in _LOCAL_RUNNERS:
        return None
    direct = options.view_as(DirectOptions)
    return max(1, direct.direct_num_workers or 1) if direct.direct_running_mode != "in_memory" else 1


def local_worker_processes(beam_args: list[str]) -> bool:
    """True when the local runner will start separate worker processes (multi_processing mode)."""
    options = PipelineOptions(beam_args)
    return (options.view_as(StandardOptions).runner in _LOCAL_RUNNERS
            and options.view_as(DirectOptions).direct_running_mode == "multi_processing")
