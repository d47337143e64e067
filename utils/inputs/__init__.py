"""The list of videos a run takes: paths, list files, folders and glob patterns, the sharding rule."""
