"""The claims' experiments: one module per claim (``run``, ``verdict``, ``CRITERIA``), shipped as
``gradflow.experiments`` (pyproject maps this folder into the package)."""
