"""Training, features and the model store (registry) of Rigwatch."""
