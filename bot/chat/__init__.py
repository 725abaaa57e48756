"""The chat room: everything that talks to Telegram: commands and buttons, the words, charts, the sender and the
repeating jobs that reach the chats."""
