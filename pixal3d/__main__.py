"""`python -m pixal3d` is the `pixal3d` command."""

import sys

from pixal3d.cli import main

sys.exit(main())
