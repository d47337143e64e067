"""Kept so that ``python -m utils.manifests`` still works: the summary of a folder's manifests is
``utils.records.manifests``."""
from utils.records.manifests import main

if __name__ == "__main__":
    raise SystemExit(main())
