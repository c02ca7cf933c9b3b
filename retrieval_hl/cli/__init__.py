"""The ``rhl`` command line: thin commands over the library."""
