"""OpenCL C sources of ewoksxpcs, one file per concept (installed as ewoksxpcs.kernels)."""
