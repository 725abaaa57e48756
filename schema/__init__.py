"""The database schema that the bot writes and ml/ reads: the tables, the connection proxy they are bound to,
and the domain values stored in them. It imports neither `bot` nor `ml`."""
