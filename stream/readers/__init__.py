"""Readers of a pipeline's Redis streams that need no Ray: results, result pages and feeds for HTTP
clients, what a run watches of the stages.
"""
