"""What every uplion service shares: configuration, logs, health, metrics, topic names, lifecycle."""
