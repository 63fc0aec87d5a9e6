"""``python -m mlmodel_server``."""

from mlmodel_server.cli import main

main()
