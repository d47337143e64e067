"""``python -m utils.outputs.features``: see ``utils.outputs.features.cli``."""
import sys

from utils.outputs.features.cli import main

sys.exit(main())
