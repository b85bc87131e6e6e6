"""Development helpers shared by the benchmarks and the tests (not shipped in the image)."""
