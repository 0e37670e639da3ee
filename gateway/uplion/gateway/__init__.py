"""uplion gateway: the gRPC inference service; requests become Pulsar tasks, results flow back."""
