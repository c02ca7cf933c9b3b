"""What every layer shares: errors, atomic writes, the ffmpeg locator, the artefact base."""
