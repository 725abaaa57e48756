"""The Rigwatch agent: samples this machine with psutil and publishes the metrics to Kafka."""
