"""vtk: a streaming, data-centric video-text toolkit (InternVid pipeline + ViCLIP)."""

__version__ = "0.1.0"
