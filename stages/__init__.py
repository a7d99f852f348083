"""The five stages (extract, cluster-select, train, eval, prune) and their CLI entry points."""
