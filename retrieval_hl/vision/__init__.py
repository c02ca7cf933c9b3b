"""Vision tools shared by signals and reframing: detectors and camera-motion compensation."""
