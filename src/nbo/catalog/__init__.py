"""The offer catalogue: the file's schema, loading and validation, the terms
ranking asks for, and the live holder that re-reads a changed file.
"""
