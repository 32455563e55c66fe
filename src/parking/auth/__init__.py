"""Roles per audience and the tokens that carry them."""
