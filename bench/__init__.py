"""Benchmarks of piagent and the fake model server they and the test suite share (``bench.fakemodel``)."""
