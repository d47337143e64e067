"""Pipeline stages: paths -> decoded frames -> stacks -> (network) -> sinks."""
