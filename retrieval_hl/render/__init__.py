"""Render: highlights.json, SRT, cut and reframed mp4."""
