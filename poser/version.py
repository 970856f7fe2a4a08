"""The version of poser, on the ground floor: weights files, exports and downloads record it."""

__version__ = "0.2.0"
