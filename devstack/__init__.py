"""The whole module on one machine: ``make run`` and the end-to-end tests (devstack/README.md)."""
