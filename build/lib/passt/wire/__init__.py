"""Wire formats: parse into small typed records, build into a caller's buffer.

Nothing here imports socket, selectors, os or time (h11's rule).
"""
