"""Render: highlights.json, SRT, and the one ffmpeg renderer for cut, reframed and assembled mp4."""
