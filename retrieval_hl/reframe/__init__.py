"""Reframe: window geometry and IoU, subject cues, camera path and crop boxes for the ratio."""
