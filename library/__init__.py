"""Library of past highlights: cross-video search and script-driven assembly (to come)."""
