"""The postprocess stage (`stage.py`) and the I/O only it needs: partition leases, saved track states
and commit fences.
"""
