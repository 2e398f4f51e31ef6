"""Tracks objects across video frames on a CUDA GPU."""

version = "0.3"
requires = {"gpu": True}


def run(frames=0):
    return {"tracked_frames": int(frames)}
