"""atheris fuzz targets for the parsers that see untrusted bytes (see README.md)."""
