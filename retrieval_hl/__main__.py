"""``python -m retrieval_hl`` is the ``rhl`` command."""

from retrieval_hl.cli.main import main

main()
