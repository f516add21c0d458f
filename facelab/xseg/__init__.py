"""XSeg occlusion masks: label polygons on aligned faces, the segmentation model that learns them
(trained by the shared training engine, facelab/train), and applying it to every face."""
