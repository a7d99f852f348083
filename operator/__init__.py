"""Kopf operator: runs the five stages of each time step as Kubernetes Jobs."""
