"""The intake room: how samples arrive. A Kafka topic (the agents') or this machine's own collector, and
Prometheus remote write with node_exporter's series; each hands the pipeline parsed samples and rejected
messages. It imports neither the pipeline, the chat nor Telegram."""
