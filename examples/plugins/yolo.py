"""Detects objects in images with a YOLO model (needs PyTorch installed)."""

import torch  # not installed in the portal's environment: the plugin is UNAVAILABLE

version = "8.0"
requires = {"modules": ["torch"]}


def run(image_path):
    return {"device": str(torch.device("cpu")), "image": image_path}
