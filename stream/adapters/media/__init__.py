"""Pixels: video and camera sources, still images, JPEG, planar YCbCr."""
