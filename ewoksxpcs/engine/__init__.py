"""The engine: frame sources, q-binning, events, correlation sums, normalisation and error bars,
fits, and the NumPy implementations of the multi-tau and two-time modes.

Plain functions and classes over NumPy arrays. Imports no other layer of ewoksxpcs.
"""
