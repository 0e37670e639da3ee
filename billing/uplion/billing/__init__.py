"""uplion billing: usage events from Pulsar into PostgreSQL in batches, exactly once."""
