"""Experiment grids, runners and paper reproductions (issue 11).

``grid`` expands a YAML grid into cells, ``cells`` runs one cell with the library's own workflow
(:func:`nnmark.workflow.embed_run`, :func:`nnmark.verify`, :mod:`nnmark.attacks`), ``records`` keeps
one JSON record per cell, ``runner`` runs a grid on local processes or Ray, and ``reproduce`` turns
records into the four papers' tables beside their published numbers (``papers/*.csv``).
"""
