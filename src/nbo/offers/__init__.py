"""The decision, pure: state passed in, no I/O, no settings, no store.

What a customer may be offered and in which order: contact state and policies,
suppression, lifecycle profiles, candidates and ranking, arbitration under the
catalogue, explanations, and the decision that strings them together.
"""
