"""The Ray layer: the Serve application (`serve/`), the HTTP API (`api/`), the web console
(`console/`) and the Ray runner of ``framestream run`` (`local/`).

Nothing in `stream` imports this package.
"""
