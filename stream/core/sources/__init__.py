"""Sources, pure: what a source string names, its id, whether the API may open it, its status."""
