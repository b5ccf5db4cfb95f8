"""`python -m training.fine ...` = `python -m training train-fine ...`."""
from training.fine.cli import main

raise SystemExit(main())
