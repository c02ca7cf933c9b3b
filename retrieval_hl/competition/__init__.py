"""The competition format: index and predictions files, validation, metric, batch runner."""
