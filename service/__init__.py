"""The job service: REST API, web UI, queue workers, batch jobs, storage and retention around the client pipeline."""
