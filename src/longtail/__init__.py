"""longtail: long-tailed image classification with ALA, GALA and the standard baselines."""

__version__ = "0.1.0"
