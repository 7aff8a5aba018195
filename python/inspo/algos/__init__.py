"""Offline MARL algorithms sharing one set of networks, data handling and evaluation."""
