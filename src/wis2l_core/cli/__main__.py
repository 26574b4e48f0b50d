"""``python -m wis2l_core.cli``: the same as the ``wis2l`` command."""

import sys

from wis2l_core.cli import main

sys.exit(main())
