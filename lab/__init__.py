"""The benchmark lab: measurements of the harness, outside the product (`python -m lab --help`)."""
