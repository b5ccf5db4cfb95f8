"""`python -m inference`: run the command line, then leave without the interpreter's teardown.

When `main` returns, every output is written (atomically) and closed. Tearing the interpreter down would unload
OpenVINO's plugin and free the model and scan buffers object by object: about 0.2 s on a 2-core machine, counted
in every case's time by organisers who time one container per case. So: the exit handlers run (temporary
folders), logging and the standard streams are flushed, and the process exits with main's status at once.
OpenBLAS (numpy's) runs single-threaded: the pipeline's only BLAS calls are on 3x3 matrices; numpy's arrays
get ordinary pages (inference.environment)."""
import atexit
import logging
import os
import sys

from inference.environment import set_process_environment

set_process_environment()  # before numpy loads

from inference.cli import main  # noqa: E402 - after the environment it reads

status = main()
atexit._run_exitfuncs()
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
