"""Reframe: subject cues, camera path and crop boxes for the target ratio."""
