"""Vision tools shared by signals and reframing: detectors."""
