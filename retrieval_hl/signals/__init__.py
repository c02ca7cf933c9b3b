"""Signals measured on the video itself: motion, audio, shot density, faces and people, quality."""
