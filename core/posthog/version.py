"""The package version, also sent as ``$lib_version``."""

VERSION = "0.1.0"
__version__ = VERSION
