"""One video's frames: decoding (PyAV, FFmpeg's fps filter), pixel presets, stacks, the
producer threads that decode ahead, and the kept resampled video.  Knows nothing of outputs."""
