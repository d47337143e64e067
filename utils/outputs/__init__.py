"""Where features go and how they are read back: output names, the stores (a file per key,
or one HDF5 file per shard), serialization, restricted unpickling, completeness, the loader."""
