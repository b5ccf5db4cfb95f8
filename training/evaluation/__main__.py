"""``python -m training.evaluation``."""
from training.evaluation.cli import main

raise SystemExit(main())
