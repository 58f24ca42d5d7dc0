"""`loadtest bench`: framestream next to the alternatives on one clip, in one run (`run`), the
single-process systems and the limit it compares with (`baselines`), the Ray systems
(`ray_systems`, `serve_plain`) and the systems' names (`systems`)."""
