"""The Rigwatch bot: ingest metrics, predict, alert and answer in Telegram."""
