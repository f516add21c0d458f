"""DeepFaceLab's files: its pickles, its model folders and its aligned-face labels, read (and for
models written back) without running anything a file contains."""
