"""Tools that are not the product's job: benchmarks and synthetic-data writers (speckle with a
known g2, Eiger scans in the Bliss/NeXus layout).

Nothing else in ewoksxpcs imports this package, except the command line, lazily, for its
``benchmark``, ``simulate`` and ``demo`` subcommands.
"""
