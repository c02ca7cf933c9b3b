"""What every layer shares: errors, atomic writes, the ffmpeg locator, default paths and the
artefact base.
"""
