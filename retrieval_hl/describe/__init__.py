"""Describers: vocabulary (offline default), the user's request, and VLMs."""
