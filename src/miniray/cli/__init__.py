"""The miniray command line: start, stop, status."""
