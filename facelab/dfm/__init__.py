"""Models as ONNX files for DeepFaceLive (`.dfm`) and for onnxruntime.

A `.dfm` is a plain ONNX file with DeepFaceLab's exporter's tensor names, all NHWC float32 BGR in
0..1 at the model's resolution (static H and W, dynamic batch):
- input `in_face:0` (N, res, res, 3), and for AMP `morph_value:0` (1,);
- outputs, in order: `out_face_mask:0` (the dst mask), `out_celeb_face:0` (the swap) and
  `out_celeb_face_mask:0` (the swap's mask).
An XSeg model exports as `in_face:0` -> `out_mask:0`. `export.py` writes these files, `runtime.py`
reads and runs them.
"""

FACE_INPUT, MORPH_INPUT = "in_face:0", "morph_value:0"
FACE_OUTPUTS = ("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0")
XSEG_OUTPUT = "out_mask:0"
# Our own keys in the ONNX metadata (DeepFaceLive ignores them): what merge needs to crop faces.
META_PREFIX = "facelab."
