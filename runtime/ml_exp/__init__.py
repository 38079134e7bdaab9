"""ml-exp runtime: settings, storage and steps for one transformer classification experiment."""

__version__ = "0.1.0"
