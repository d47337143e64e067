"""Kept so that ``python -m utils.features`` still works: the loader and its command line are
``utils.outputs.features``."""
from utils.outputs.features import main

if __name__ == "__main__":
    raise SystemExit(main())
