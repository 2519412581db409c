"""``python -m evoprune`` is the same as the ``evoprune`` command."""

import sys

from evoprune.cli import main

sys.exit(main())
