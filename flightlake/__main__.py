"""``python -m flightlake`` is the ``flightlake`` command."""

from flightlake.cli import main

main()
