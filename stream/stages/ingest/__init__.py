"""The ingest stage (`stage.py`) and the I/O only it needs: frame reading threads, its writes and
status reports to Redis, its view of the pipeline's backlog.
"""
