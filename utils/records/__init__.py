"""What a run writes about itself: JSON lines, the per-shard manifest and failure list, the
run records (provenance, the rerun check), and the locks on an output folder."""
