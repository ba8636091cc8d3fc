"""Sesam's Data Transformation Language (DTL), compiled once per pipe into Python closures.

Layers: :mod:`.values` (the value types and transit JSON) -> :mod:`.functions` (the registry of
expression functions and the semantics helpers they share) -> the compiler and the rules.
"""
