"""Figures (matplotlib) and, later, the HTML report."""
