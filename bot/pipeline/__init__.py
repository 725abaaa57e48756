"""The pipeline room: what gets decided. Samples from the intake, predictions, incidents and forecasts out. It
talks to the chat only through the callbacks it is handed, and imports neither the chat nor Telegram."""
