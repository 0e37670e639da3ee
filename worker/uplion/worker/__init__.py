"""uplion worker: takes tasks for one model from Pulsar when it has a free slot, runs a backend, replies."""
