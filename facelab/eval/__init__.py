"""`facelab eval`: how good a swap is, measured (metrics.py per frame, evaluate.py over a video,
report.py for the JSON and the HTML page, workspace.py for what a workspace supplies)."""
