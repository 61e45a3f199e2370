"""The ``yapo`` command line: thin wrappers over the library."""
