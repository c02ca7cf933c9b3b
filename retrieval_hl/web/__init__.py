"""The web page (``rhl serve``): the top layer beside the command line, imported only by it."""
