"""The ``recsys`` command line (installed as the ``recsys_cli`` package)."""
