"""Running a study: the API (``api.run_benchmark``), the engine (the only loop), the file-writing
runner, sweeps and their executors, fleets, the inputs shared by cells, and the thread policy."""
