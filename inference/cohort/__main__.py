import sys

from inference.cohort.cli import main

sys.exit(main())
