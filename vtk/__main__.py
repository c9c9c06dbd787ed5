"""`python -m vtk ...` (also what `torchrun -m vtk train ...` runs)."""

from vtk.cli import main

main()
