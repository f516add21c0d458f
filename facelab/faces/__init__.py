"""Faces: detection, landmarks, alignment, aligned-file metadata and faceset tools."""
