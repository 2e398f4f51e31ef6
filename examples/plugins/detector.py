"""Detects faces with an ONNX model file that has to be downloaded first."""

version = "2.1"
# ~ and $VARS are expanded; a relative path is taken next to this file.
requires = {"files": ["~/.cache/portal-models/detector.onnx"]}


def run(image_path):
    return {"faces": [], "image": image_path}
