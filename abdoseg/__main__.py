"""`python -m abdoseg` and the installed `abdoseg` command: run a subcommand (abdoseg.command).

A cold-start subcommand (`predict`) gets the process environment it needs before numpy loads
(abdoseg.inference.process.environment: OpenBLAS single-threaded, numpy's arrays on ordinary pages), and leaves
without the interpreter's teardown. When `main` returns, every output is written (atomically) and closed; tearing
the interpreter down would unload OpenVINO's plugin and free the model and scan buffers object by object, time
that organisers who time one container per case count in every case. So: the exit handlers run (temporary
folders), logging and the standard streams are flushed, and the process exits with main's status at once.
"""
import atexit
import logging
import os
import sys


def run() -> None:
    """The console script's entry (pyproject `[project.scripts]`)."""
    from abdoseg.command import is_cold_start, main

    argv = sys.argv[1:]
    if not is_cold_start(argv):
        sys.exit(main(argv))
    from abdoseg.inference.process.environment import set_process_environment

    set_process_environment()  # before numpy loads
    status = main(argv)
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
