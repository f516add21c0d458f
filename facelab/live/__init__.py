"""`facelab live`: swap faces in a camera, a stream or a file as it plays.

`sources` reads frames (dropping the ones the pipeline is too slow for), `swapper` turns a frame
into a swapped frame (track, align, model, merge's blend), `outputs` writes them (a file with the
input's sound, a window, a v4l2loopback camera or the browser), and `session` runs them, on the schedule it
measures to be faster, and keeps the figures (capture and output fps, latency, drops).
"""
