"""A batch run from start to end: the command line, the loop over videos, stopping on signals."""
