"""``python -m curation``: the ``curate`` command, for hosts where the venv's scripts are not on PATH (Ray Jobs)."""

import sys

from curation.cli import main

sys.exit(main())
