"""Reusable layers that are not norm plugins: weight-standardized convolutions (ws.py)."""
