"""The job system: job rows, kinds, submission and the runner that workers call."""
