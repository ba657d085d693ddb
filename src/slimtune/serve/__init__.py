"""`slimtune serve`: an HTTP server for many adapters over one base model."""
