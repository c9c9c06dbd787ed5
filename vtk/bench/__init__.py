"""Throughput benchmarks behind `vtk bench` (one module per subcommand)."""
