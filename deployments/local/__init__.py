"""`framestream run --runner ray`: a local Ray and the run that drives the Serve application."""
