"""The version of genir_mech: one place, read by the package, the build (pyproject.toml) and `genir-mech --version`."""

__version__ = "0.1.0"
