"""Experiments that chain the library's stages: the template demo, studies of the papers' findings, adapt."""
